package stream_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/routersvc/internal/app"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/store"
	"github.com/adrank/adrank/routersvc/internal/stream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/twmb/franz-go/pkg/kfake.(*Cluster).run"))
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var loud = slog.New(slog.NewTextHandler(os.Stderr, nil))

var topics = stream.DefaultTopics()

// rig is a Kafka cluster (kfake, in process) and routers built by app over
// the in-process services, each with its own bbolt store or one shared.
type rig struct {
	t       *testing.T
	cluster *kfake.Cluster
	brokers []string
	st      store.Store
}

func newRig(t *testing.T) *rig {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topics.Requests, topics.Results, topics.Events, topics.DeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &rig{t: t, cluster: c, brokers: c.ListenAddrs(), st: st}
}

// router builds a router over the in-process services and the rig's store.
func (r *rig) router() *app.Router {
	r.t.Helper()
	local, table, _, err := app.Local(world.DefaultConfig(), "../../../models", quiet)
	if err != nil {
		r.t.Fatal(err)
	}
	table.SetConfigs(map[string][]byte{"feed": []byte(`{"production": "v2"}`), "stories": []byte(`{"production": "v1"}`)})
	table.SetExperiments(nil)
	rt := app.New(app.Parts{Table: table, Clients: local, Store: r.st, Log: quiet, Limits: core.Limits{Budget: time.Minute}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = rt.Run(ctx); close(done) }()
	r.t.Cleanup(func() { cancel(); <-done })
	return rt
}

// worker runs a stream worker over rt until the returned stop is called.
func (r *rig) worker(rt *app.Router, id string, o stream.Options) (stop func()) {
	o.Brokers, o.Group, o.TransactionalID, o.Topics, o.Log = r.brokers, "test-group", id, topics, loud
	o.Record, o.ResultTTL = rt.Lab.RecordOnce, time.Hour
	rt.Core.UsePrecomputed(r.st)
	w := stream.New(rt.Core, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	r.t.Cleanup(stop)
	return stop
}

func (r *rig) produce(recs ...*kgo.Record) {
	r.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.brokers...))
	if err != nil {
		r.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		r.t.Fatal(err)
	}
}

// consume reads topic as a read_committed consumer until want records came
// (then 500 ms more, to catch any extra) or 60 s passed.
func (r *rig) consume(topic string, want int) []*kgo.Record {
	r.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		r.t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(60 * time.Second)
	var extra time.Time
	for time.Now().Before(deadline) && (extra.IsZero() || time.Now().Before(extra)) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		out = append(out, cl.PollFetches(ctx).Records()...)
		cancel()
		if len(out) >= want && extra.IsZero() {
			extra = time.Now().Add(500 * time.Millisecond)
		}
	}
	return out
}

var w = sync.OnceValue(func() *world.World {
	wd, err := world.New(world.DefaultConfig())
	if err != nil {
		panic(err)
	}
	return wd
})

// request is a rank request for user u with 20 of feed's ads.
func request(id string, u int) *routerv1.RankRequest {
	req := &routerv1.RankRequest{RequestId: id, UserId: w().Users()[u].ID, Domain: "feed", Slots: 3,
		Context: &routerv1.RequestContext{Device: routerv1.Device_DEVICE_MOBILE, Country: "DE"}}
	for i, a := range w().Ads("feed")[u%50 : u%50+20] {
		req.Candidates = append(req.Candidates, &routerv1.Candidate{AdId: a.ID, AdvertiserId: a.AdvertiserID, BidMicros: int64(100_000 + 7_000*i)})
	}
	return req
}

func protoRecord(t *testing.T, m proto.Message, key string) *kgo.Record {
	v, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topics.Requests, Key: []byte(key), Value: v}
}

func jsonRecord(t *testing.T, m proto.Message, key string) *kgo.Record {
	v, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topics.Requests, Key: []byte(key), Value: v, Headers: []kgo.RecordHeader{{Key: stream.HeaderContentType, Value: []byte(stream.ContentJSON)}}}
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Every request is answered once, as the real-time Rank answers it: the
// micro-batched features and ranker calls give the same pCTRs, prices and
// ads as one Rank call per request. JSON requests get JSON answers.
func TestAnswersEqualRank(t *testing.T) {
	r := newRig(t)
	rt := r.router()
	const n = 120
	var recs []*kgo.Record
	for i := range n {
		req := request(fmt.Sprintf("eq-%d", i), i)
		if i%3 == 0 {
			recs = append(recs, jsonRecord(t, req, req.GetUserId()))
		} else {
			recs = append(recs, protoRecord(t, req, req.GetUserId()))
		}
	}
	r.produce(recs...)
	r.worker(rt, "w1", stream.Options{Batch: 64})
	got := r.consume(topics.Results, n)
	if len(got) != n {
		t.Fatalf("%d answers for %d requests", len(got), n)
	}
	// The reference: a second router over another store, one Rank each.
	ref := newRig(t).router()
	seen := map[string]bool{}
	for _, rec := range got {
		var resp routerv1.RankResponse
		id := header(rec, stream.HeaderRequestID)
		i, _ := strconv.Atoi(strings.TrimPrefix(id, "eq-"))
		var err error
		if header(rec, stream.HeaderContentType) == stream.ContentJSON {
			if i%3 != 0 {
				t.Errorf("%s: a protobuf request got a JSON answer", id)
			}
			err = protojson.Unmarshal(rec.Value, &resp)
		} else {
			err = proto.Unmarshal(rec.Value, &resp)
		}
		if err != nil || resp.GetRequestId() != id || string(rec.Key) != id || seen[id] {
			t.Fatalf("answer %q (key %q, seen %v): %v", resp.GetRequestId(), rec.Key, seen[id], err)
		}
		seen[id] = true
		want, err := ref.GRPC.Rank(context.Background(), request(id, i))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want.GetResults(), resp.GetResults(), protocmp.Transform()); diff != "" {
			t.Fatalf("%s: streamed answer differs from Rank's (-rank +stream):\n%s", id, diff)
		}
	}
	// Recorded once each: one ranker call per request in the version health.
	if err := rt.Core.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep, err := rt.Core.Report(context.Background(), "feed")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range rep.Versions {
		if v.Version == "v2" && v.Requests != n {
			t.Errorf("v2 served %v requests in the record, want %d", v.Requests, n)
		}
	}
}

// Bad messages go to the dead-letter topic with the reason and the
// original position; the good ones around them are answered.
func TestDeadLetters(t *testing.T) {
	r := newRig(t)
	rt := r.router()
	bad := request("b-invalid", 1)
	bad.Slots = 0
	unknown := request("b-unknown", 2)
	unknown.Domain = "nope"
	big := request("b-big", 3)
	big.Candidates[0].AdId = strings.Repeat("x", 70_000)
	cases := []struct {
		rec    *kgo.Record
		reason string
	}{
		{&kgo.Record{Topic: topics.Requests, Key: []byte("u"), Value: []byte("\xff\xff not a protobuf")}, "malformed"},
		{&kgo.Record{Topic: topics.Requests, Key: []byte("u"), Value: []byte(`{"user_id": 5`), Headers: []kgo.RecordHeader{{Key: stream.HeaderContentType, Value: []byte(stream.ContentJSON)}}}, "malformed"},
		{protoRecord(t, bad, "u"), "invalid: slots"},
		{protoRecord(t, unknown, "u"), "not found"},
		{protoRecord(t, big, "u"), "oversized"},
		{&kgo.Record{Topic: topics.Events, Key: []byte("i"), Value: []byte(`{"impression_id": "x", "type": "EVENT_TYPE_CLICK", "value": 3}`), Headers: []kgo.RecordHeader{{Key: stream.HeaderContentType, Value: []byte(stream.ContentJSON)}}}, "invalid: events[0].value"},
	}
	var recs []*kgo.Record
	for i, c := range cases {
		recs = append(recs, c.rec, protoRecord(t, request(fmt.Sprintf("good-%d", i), i), "u"))
	}
	r.produce(recs...)
	r.worker(rt, "w1", stream.Options{MaxBytes: 64 << 10})
	dead := r.consume(topics.DeadLetter, len(cases))
	if len(dead) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(dead), len(cases))
	}
	byValue := map[string]*kgo.Record{}
	for _, d := range dead {
		byValue[string(d.Value)] = d
	}
	for i, c := range cases {
		d, ok := byValue[string(c.rec.Value)]
		if !ok {
			t.Errorf("case %d (%s): no dead letter with its value", i, c.reason)
			continue
		}
		if !strings.HasPrefix(header(d, stream.HeaderError), c.reason) ||
			header(d, stream.HeaderTopic) != c.rec.Topic || header(d, stream.HeaderOffset) == "" || header(d, stream.HeaderPartition) == "" {
			t.Errorf("dead letter %d: error %q (want %q...), topic %q, offset %q, value kept %v", i, header(d, stream.HeaderError), c.reason,
				header(d, stream.HeaderTopic), header(d, stream.HeaderOffset), string(d.Value) == string(c.rec.Value))
		}
	}
	if got := r.consume(topics.Results, len(cases)); len(got) != len(cases) {
		t.Errorf("%d answers to the %d good requests between the bad ones", len(got), len(cases))
	}
}

// Two workers in one group, one of which stops halfway (its partitions move
// to the other): every request is answered exactly once for a
// read_committed reader, and recorded exactly once.
func TestRebalanceAnswersEachOnce(t *testing.T) {
	r := newRig(t)
	rt1, rt2 := r.router(), r.router()
	const n = 400
	stop1 := r.worker(rt1, "w1", stream.Options{Batch: 16})
	r.worker(rt2, "w2", stream.Options{Batch: 16})
	var recs []*kgo.Record
	for i := range n {
		req := request(fmt.Sprintf("rb-%d", i), i%500)
		recs = append(recs, protoRecord(t, req, req.GetUserId()))
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		stop1()
	}()
	r.produce(recs...)
	got := r.consume(topics.Results, n)
	ids := map[string]int{}
	for _, rec := range got {
		ids[header(rec, stream.HeaderRequestID)]++
	}
	for id, c := range ids {
		if c != 1 {
			t.Errorf("%s answered %d times", id, c)
		}
	}
	if len(ids) != n {
		t.Fatalf("%d requests answered of %d", len(ids), n)
	}
	for _, rt := range []*app.Router{rt1, rt2} {
		if err := rt.Core.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := rt2.Core.Report(context.Background(), "feed")
	if err != nil {
		t.Fatal(err)
	}
	var recorded float64
	for _, v := range rep.Versions {
		recorded += v.Requests
	}
	if recorded != n {
		t.Errorf("%v requests recorded, want %d: exactly once", recorded, n)
	}
}

// A request read again (here: sent twice, as a producer that retries
// without idempotence would) is recorded once and answered the same way
// twice. (Ranking is deterministic here, so the equal answers alone would
// not show which one was published; the record count does.)
func TestReadAgainAnswersTheSame(t *testing.T) {
	r := newRig(t)
	rt := r.router()
	req := request("twice", 3)
	r.produce(protoRecord(t, req, req.GetUserId()))
	r.worker(rt, "w1", stream.Options{})
	first := r.consume(topics.Results, 1)
	r.produce(protoRecord(t, req, req.GetUserId()))
	both := r.consume(topics.Results, 2)
	if len(first) != 1 || len(both) != 2 {
		t.Fatalf("%d then %d answers, want 1 then 2", len(first), len(both))
	}
	var a, b routerv1.RankResponse
	if err := proto.Unmarshal(both[0].Value, &a); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(both[1].Value, &b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&a, &b, protocmp.Transform()); diff != "" {
		t.Errorf("the second answer differs (-first +second):\n%s", diff)
	}
	if err := rt.Core.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep, err := rt.Core.Report(context.Background(), "feed")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range rep.Versions {
		if v.Version == "v2" && v.Requests != 1 {
			t.Errorf("recorded %v times, want once", v.Requests)
		}
	}
}

// A streamed answer is waiting for the same request on the real-time path:
// Rank returns it, marked precomputed with its age, until its TTL ends.
func TestPrecomputed(t *testing.T) {
	r := newRig(t)
	rt := r.router()
	req := request("pre-1", 7)
	r.produce(protoRecord(t, req, req.GetUserId()))
	r.worker(rt, "w1", stream.Options{})
	if got := r.consume(topics.Results, 1); len(got) != 1 {
		t.Fatalf("%d answers", len(got))
	}
	same := request("", 7) // the backend's own call: no request ID of its own
	resp, err := rt.GRPC.Rank(context.Background(), same)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSource() != routerv1.Source_SOURCE_PRECOMPUTED || resp.GetRequestId() != "pre-1" || len(resp.GetResults()) == 0 {
		t.Fatalf("source %v, request %q, age %d ms, %d results; want the precomputed answer to pre-1", resp.GetSource(), resp.GetRequestId(), resp.GetAgeMs(), len(resp.GetResults()))
	}
	other := request("", 7)
	other.Candidates = other.GetCandidates()[1:] // another candidate set
	resp, err = rt.GRPC.Rank(context.Background(), other)
	if err != nil || resp.GetSource() != routerv1.Source_SOURCE_REALTIME {
		t.Fatalf("another candidate set: source %v (%v), want realtime", resp.GetSource(), err)
	}
}

// stuckEngine fails one request ID as a downstream outage would, for good.
type stuckEngine struct {
	*core.Engine
	stuck string
}

func (e stuckEngine) RankBatch(ctx context.Context, reqs []*core.Request) []core.BatchResult {
	var pass []*core.Request
	for _, r := range reqs {
		if r.RequestID != e.stuck {
			pass = append(pass, r)
		}
	}
	got := e.Engine.RankBatch(ctx, pass)
	out := make([]core.BatchResult, 0, len(reqs))
	for _, r := range reqs {
		if r.RequestID == e.stuck {
			out = append(out, core.BatchResult{Err: core.Errorf(core.KindUnavailable, "injected outage")})
			continue
		}
		out, got = append(out, got[0]), got[1:]
	}
	return out
}

// A request that fails for a transient reason every time (its domain stays
// down) is retried, then dead-lettered, so that it does not hold its
// partition: the requests after it are answered, each once.
func TestStuckRequestIsDeadLetteredAfterRetries(t *testing.T) {
	r := newRig(t)
	rt := r.router()
	var recs []*kgo.Record
	for i := range 5 {
		recs = append(recs, protoRecord(t, request(fmt.Sprintf("s-%d", i), 1), "same-key"))
	}
	r.produce(recs...)
	o := stream.Options{Brokers: r.brokers, Group: "test-group", TransactionalID: "w1", Topics: topics, Log: quiet, Record: rt.Lab.RecordOnce, ResultTTL: time.Hour}
	rt.Core.UsePrecomputed(r.st)
	w := stream.New(stuckEngine{rt.Core, "s-2"}, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	dead := r.consume(topics.DeadLetter, 1)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want one", len(dead))
	}
	if e := header(dead[0], stream.HeaderError); !strings.HasPrefix(e, "unavailable after 8 attempts: ") {
		t.Fatalf("dead letter error %q, want unavailable after 8 attempts", e)
	}
	ids := map[string]int{}
	for _, rec := range r.consume(topics.Results, 4) {
		ids[header(rec, stream.HeaderRequestID)]++
	}
	if len(ids) != 4 || ids["s-2"] != 0 || ids["s-0"] != 1 || ids["s-4"] != 1 {
		t.Errorf("answers %v, want s-0, s-1, s-3, s-4 once each", ids)
	}
}

// The same request twice in one poll gets one answer twice, recorded once.
func TestTwiceInOnePoll(t *testing.T) {
	r := newRig(t)
	rt := r.router()
	req := request("dup", 4)
	r.produce(protoRecord(t, req, "k"), protoRecord(t, req, "k"))
	r.worker(rt, "w1", stream.Options{})
	got := r.consume(topics.Results, 2)
	if len(got) != 2 || string(got[0].Value) != string(got[1].Value) {
		t.Fatalf("%d answers, equal: %v", len(got), len(got) == 2 && string(got[0].Value) == string(got[1].Value))
	}
	if err := rt.Core.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep, err := rt.Core.Report(context.Background(), "feed")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range rep.Versions {
		if v.Version == "v2" && v.Requests != 1 {
			t.Errorf("recorded %v times, want once", v.Requests)
		}
	}
}
