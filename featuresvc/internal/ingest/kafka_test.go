package ingest

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
)

// store is a PutFeatures that takes rows whose values are in [0, 1].
type store struct {
	mu   sync.Mutex
	rows map[string]float64
}

func (s *store) put(_ context.Context, req *featuresv1.PutFeaturesRequest) (*featuresv1.PutFeaturesResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range req.GetRows() {
		if v := r.GetValues()["x"]; v < 0 || v > 1 {
			return nil, status.Errorf(codes.InvalidArgument, "rows[%d].x: %v out of bounds", i, v)
		}
	}
	for _, r := range req.GetRows() {
		s.rows[r.GetKey()[0]] = r.GetValues()["x"]
	}
	return &featuresv1.PutFeaturesResponse{}, nil
}

func (s *store) get(k string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.rows[k]
	return v, ok
}

// Records in binary protobuf and in JSON are applied; an invalid one and
// one that is not a PutFeaturesRequest go to the dead-letter topic with the
// reason, and the records after them are applied too. A consumer started
// again in the same group resumes after them.
func TestTopicWrites(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "features", "dead"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	pr, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	ctx := context.Background()
	row := func(k string, v float64) []byte {
		b, _ := proto.Marshal(&featuresv1.PutFeaturesRequest{Entity: "user", Rows: []*featuresv1.FeatureRow{{Key: []string{k}, Values: map[string]float64{"x": v}}}})
		return b
	}
	recs := []*kgo.Record{
		{Topic: "features", Value: row("a", 0.5)},
		{Topic: "features", Value: row("b", 7)},            // invalid
		{Topic: "features", Value: []byte("not protobuf")}, // not a request
		{Topic: "features", Value: []byte(`{"entity": "user", "rows": [{"key": ["c"], "values": {"x": 0.25}}]}`), Headers: []kgo.RecordHeader{{Key: HeaderContentType, Value: []byte(ContentJSON)}}},
	}
	if err := pr.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	st := &store{rows: map[string]float64{}}
	run := func() *Consumer {
		c := New(Options{Brokers: brokers, Topic: "features", Group: "g", DeadLetter: "dead", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, st.put)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- c.Run(cctx) }()
		deadline := time.Now().Add(20 * time.Second)
		for {
			if applied, dead := c.Stats(); applied+dead >= 4 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := run()
	if applied, dead := c.Stats(); applied != 2 || dead != 2 {
		t.Fatalf("applied %d, dead-lettered %d; want 2 and 2", applied, dead)
	}
	if v, ok := st.get("a"); !ok || v != 0.5 {
		t.Errorf("a: %v %v", v, ok)
	}
	if v, ok := st.get("c"); !ok || v != 0.25 {
		t.Errorf("c (JSON): %v %v", v, ok)
	}
	if _, ok := st.get("b"); ok {
		t.Error("an invalid record was applied")
	}
	// The dead letters carry why and where.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("dead"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var dead []*kgo.Record
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for len(dead) < 2 && pctx.Err() == nil {
		cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) { dead = append(dead, r) })
	}
	if len(dead) != 2 {
		t.Fatalf("%d dead letters", len(dead))
	}
	header := func(r *kgo.Record, k string) string {
		for _, h := range r.Headers {
			if h.Key == k {
				return string(h.Value)
			}
		}
		return ""
	}
	if e := header(dead[0], HeaderError); e != "rows[0].x: 7 out of bounds" || header(dead[0], HeaderOffset) != "1" {
		t.Errorf("first dead letter: error %q, offset %q", e, header(dead[0], HeaderOffset))
	}
	if e := header(dead[1], HeaderError); e == "" || header(dead[1], HeaderOffset) != "2" {
		t.Errorf("second dead letter: error %q, offset %q", e, header(dead[1], HeaderOffset))
	}
	// Started again in the group: nothing is applied twice, the next
	// record is.
	st.mu.Lock()
	st.rows = map[string]float64{}
	st.mu.Unlock()
	if err := pr.ProduceSync(ctx, &kgo.Record{Topic: "features", Value: row("d", 1)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	c2 := New(Options{Brokers: brokers, Topic: "features", Group: "g", DeadLetter: "dead", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, st.put)
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- c2.Run(cctx) }()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if applied, _ := c2.Stats(); applied >= 1 {
			break
		}
	}
	stop()
	<-done
	if applied, dead := c2.Stats(); applied != 1 || dead != 0 {
		t.Errorf("after a restart: applied %d, dead-lettered %d; want 1 and 0", applied, dead)
	}
	if _, ok := st.get("a"); ok {
		t.Error("a record was applied again after a restart")
	}
}
