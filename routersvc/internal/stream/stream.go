// Package stream is the router's stream worker: the seed's streaming
// deployment. It consumes rank requests and click/conversion events from
// Kafka in a consumer group, ranks the requests with the same core as Rank
// (micro-batched: one features call and one ranker call per domain and
// version for a whole poll), and produces the answers, each poll in one
// Kafka transaction together with the consumed offsets (exactly once for a
// read_committed reader). Every answer is also kept as a precomputed
// answer, which Rank returns to the same request while it is fresh.
//
// Bad messages (undecodable, oversized, invalid) go to a dead-letter topic
// with the reason and the original position in headers; they never stop a
// partition. A downstream outage aborts the transaction and retries the
// poll after a pause: consumption slows, memory does not grow.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/routersvc/internal/core"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/router"
)

// Topics are the stream's topics.
type Topics struct {
	// Requests: RankRequest, keyed by user ID.
	Requests string
	// Results: RankResponse, keyed by request ID.
	Results string
	// Events: Event (click or conversion), keyed by impression ID.
	Events string
	// DeadLetter: the original message, with why and where in headers.
	DeadLetter string
}

// DefaultTopics are the topics' default names.
func DefaultTopics() Topics {
	return Topics{Requests: "adrank.rank.requests", Results: "adrank.rank.results", Events: "adrank.events", DeadLetter: "adrank.deadletter"}
}

// Message headers.
const (
	// HeaderContentType says how a value is encoded: ContentJSON
	// (protojson), else binary protobuf. An answer is encoded as its
	// request was.
	HeaderContentType = "content-type"
	ContentJSON       = "application/json"
	ContentProto      = "application/x-protobuf"
	// Dead letters carry why, and where the original was.
	HeaderError     = "adrank-error"
	HeaderTopic     = "adrank-topic"
	HeaderPartition = "adrank-partition"
	HeaderOffset    = "adrank-offset"
	// HeaderRequestID is on every answer: its request's ID.
	HeaderRequestID = "adrank-request-id"
)

// Engine is what the worker needs of the core.
type Engine interface {
	RankBatch(ctx context.Context, reqs []*core.Request) []core.BatchResult
	Answered(ctx context.Context, domain, requestID string) (*core.Response, bool)
	ReportEvents(ctx context.Context, events []core.Event) ([]lab.EventResult, error)
}

// Options configure a Worker.
type Options struct {
	Brokers []string
	// Group is the consumer group; every worker of a deployment joins it.
	Group string
	// TransactionalID is this instance's own (unique among the group's
	// running members; a restarted instance reuses it, fencing its
	// predecessor).
	TransactionalID string
	Topics          Topics
	// Batch is the most records one poll takes, and so one transaction and
	// one micro-batch (default 64).
	Batch int
	// Linger is how long the broker may wait for a fuller poll (default
	// 10ms, the client's least).
	Linger time.Duration
	// MaxBytes is the largest message value accepted (default 1 MiB).
	MaxBytes int
	// Timeout bounds the work of one poll (default 10s).
	Timeout time.Duration
	// Record records served requests idempotently with their answers, and
	// keeps the shared pointers to them, for ResultTTL, in one transaction,
	// and reports which were recorded now (lab.RecordOnce).
	Record    func(ctx context.Context, served []lab.Served, answers []map[string][]byte, shared map[string][]byte, ttl time.Duration) ([]bool, error)
	ResultTTL time.Duration
	Log       *slog.Logger
}

// Lag is the group's lag on one topic.
type Lag struct {
	Topic string
	Lag   int64
}

// Worker consumes, ranks and answers. Run owns its goroutines.
type Worker struct {
	o   Options
	eng Engine

	mu       sync.Mutex
	lag      []Lag
	attempts map[string]int // topic/partition/offset -> polls failed in a row
}

// New returns a worker; call Run.
func New(eng Engine, o Options) *Worker {
	if o.Batch <= 0 {
		o.Batch = 64
	}
	if o.Linger <= 0 {
		o.Linger = 10 * time.Millisecond
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 20
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return &Worker{o: o, eng: eng, attempts: map[string]int{}}
}

// Lag returns the group's lag, as last measured (every few seconds).
func (w *Worker) Lag() []Lag {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Lag(nil), w.lag...)
}

// Run consumes until ctx ends. A session that fails is replaced after a
// pause.
func (w *Worker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Add(1)
	go func() { defer wg.Done(); w.watchLag(lctx) }()
	for {
		err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var cfg configError
		if errors.As(err, &cfg) {
			return err
		}
		w.o.Log.Warn("stream session failed; starting a new one", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (w *Worker) clientOpts() []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(w.o.Brokers...)}
}

// configError is a session that cannot start with these options.
type configError struct{ error }

func (e configError) Unwrap() error { return e.error }

// session runs one transactional session until it fails or ctx ends.
func (w *Worker) session(ctx context.Context) error {
	sess, err := kgo.NewGroupTransactSession(append(w.clientOpts(),
		kgo.TransactionalID(w.o.TransactionalID),
		kgo.ConsumerGroup(w.o.Group),
		kgo.ConsumeTopics(w.o.Topics.Requests, w.o.Topics.Events),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(w.o.Linger),
		kgo.FetchMinBytes(64<<10),
		kgo.ProducerLinger(0),
	)...)
	if err != nil {
		return configError{err}
	}
	defer sess.Close()
	pause := time.Duration(0)
	for {
		fs := sess.PollRecords(ctx, w.o.Batch)
		if fs.IsClientClosed() || ctx.Err() != nil {
			return ctx.Err()
		}
		fs.EachError(func(topic string, p int32, err error) {
			w.o.Log.Warn("stream fetch", "topic", topic, "partition", p, "error", err)
		})
		recs := fs.Records()
		if len(recs) == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return err
		}
		out, err := w.process(ctx, recs)
		commit := err == nil
		if err != nil {
			w.o.Log.Warn("stream: a downstream failed; aborting the poll to retry it", "records", len(recs), "error", err)
		} else {
			prom := kgo.AbortingFirstErrPromise(sess.Client())
			for _, r := range out {
				sess.Produce(ctx, r, prom.Promise())
			}
			if perr := prom.Err(); perr != nil {
				w.o.Log.Warn("stream produce failed; aborting", "error", perr)
				commit = false
			}
		}
		// Never the caller's context: cancelling End can leave the client
		// in a bad state.
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		committed, err := sess.End(ectx, kgo.TransactionEndTry(commit))
		cancel()
		if err != nil {
			return fmt.Errorf("end transaction: %w", err)
		}
		switch {
		case committed:
			pause = 0
			w.mu.Lock()
			clear(w.attempts)
			w.mu.Unlock()
		case commit:
			w.o.Log.Info("stream transaction aborted (partitions moved); its records are read again", "records", len(recs))
		default:
			// A downstream failure: pause before the records come again, up
			// to 2 s, so an outage slows consumption instead of spinning.
			pause = min(max(2*pause, 50*time.Millisecond), 2*time.Second)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pause):
			}
		}
	}
}

// process ranks the poll's requests, applies its events, and returns the
// records to produce. An error (a downstream outage, the state store down)
// means: abort and retry the poll.
func (w *Worker) process(ctx context.Context, recs []*kgo.Record) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	var out []*kgo.Record
	var reqs []*core.Request
	var reqRecs []*kgo.Record
	var events []core.Event
	first := map[string]int{} // domain|request ID -> index in reqs
	var dups [][2]int         // (index in recs, index in reqs of its first copy)
	for k, r := range recs {
		if len(r.Value) > w.o.MaxBytes {
			out = append(out, w.dead(r, fmt.Sprintf("oversized: %d bytes, at most %d", len(r.Value), w.o.MaxBytes)))
			continue
		}
		switch r.Topic {
		case w.o.Topics.Requests:
			req, err := decodeRequest(r)
			if err != nil {
				out = append(out, w.dead(r, err.Error()))
				continue
			}
			// A request read again (an aborted poll, a duplicate send) is
			// found out when it is recorded, below.
			id := req.Domain + "|" + req.RequestID
			if j, ok := first[id]; ok { // twice in this poll: one answer
				dups = append(dups, [2]int{k, j})
				continue
			}
			first[id] = len(reqs)
			reqs, reqRecs = append(reqs, req), append(reqRecs, r)
		case w.o.Topics.Events:
			ev, err := decodeEvent(r)
			if err == nil {
				err = core.ValidateEvents([]core.Event{ev})
			}
			if err != nil {
				out = append(out, w.dead(r, "invalid: "+err.Error()))
				continue
			}
			events = append(events, ev)
		}
	}
	if len(events) > 0 {
		// Events are idempotent: a replayed poll counts nothing twice.
		if _, err := w.eng.ReportEvents(ctx, events); err != nil {
			return nil, err
		}
	}
	if len(reqs) == 0 {
		return out, nil
	}
	results := w.eng.RankBatch(ctx, reqs)
	var served []lab.Served
	var answers []map[string][]byte
	var ranked []int // indexes in reqs of served
	shared := map[string][]byte{}
	for i, res := range results {
		if res.Err != nil {
			if err := w.failed(reqRecs[i], res.Err, &out); err != nil {
				return nil, err
			}
			continue
		}
		answer, pointer, err := core.Precomputed(reqs[i], res.Response)
		if err != nil {
			return nil, err
		}
		maps.Copy(shared, pointer)
		served, answers, ranked = append(served, res.Served), append(answers, answer), append(ranked, i)
	}
	// Before the commit, in one store transaction: a poll read again
	// records nothing twice.
	recorded, err := w.o.Record(ctx, served, answers, shared, w.o.ResultTTL)
	if err != nil {
		return nil, core.Errorf(core.KindUnavailable, "experiment state store: %v", err)
	}
	final := map[int]*core.Response{}
	for j, i := range ranked {
		resp := results[i].Response
		if !recorded[j] {
			// Served before (by a poll that was then aborted, here or on
			// another worker): the answer to publish is the one recorded.
			if prev, ok := w.eng.Answered(ctx, reqs[i].Domain, reqs[i].RequestID); ok {
				resp = prev
			} else {
				w.o.Log.Warn("stream: a request served before has no kept answer (past --result-ttl); publishing a new one", "request_id", reqs[i].RequestID)
			}
		}
		final[i] = resp
		rec, err := w.answerRecord(resp, reqRecs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	for _, d := range dups {
		if resp, ok := final[d[1]]; ok {
			rec, err := w.answerRecord(resp, recs[d[0]])
			if err != nil {
				return nil, err
			}
			out = append(out, rec)
		} else if err := w.failed(recs[d[0]], results[d[1]].Err, &out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// failed handles a request the core could not answer: the message's fault
// (or, for good, ours) goes to the dead letters; a transient failure
// aborts the poll to retry it, until the message has failed maxAttempts
// polls in a row, and then it goes to the dead letters too, so that one
// message (a domain that stays down) cannot hold its partition forever.
func (w *Worker) failed(r *kgo.Record, err error, out *[]*kgo.Record) error {
	k := core.KindOf(err)
	switch k {
	case core.KindUnavailable, core.KindOverloaded, core.KindDeadline, core.KindCanceled:
		pos := fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
		w.mu.Lock()
		w.attempts[pos]++
		n := w.attempts[pos]
		w.mu.Unlock()
		if n < maxAttempts {
			return err
		}
		*out = append(*out, w.dead(r, fmt.Sprintf("unavailable after %d attempts: %s", n, core.Message(err))))
		return nil
	}
	*out = append(*out, w.dead(r, kindName(k)+": "+core.Message(err)))
	return nil
}

// maxAttempts is how many polls in a row a message may fail for a
// transient reason before it is dead-lettered.
const maxAttempts = 8

// answerRecord is resp as the answer to request record r. A streamed
// answer says it was ranked for the stream (source realtime), also when it
// is given again.
func (w *Worker) answerRecord(resp *core.Response, r *kgo.Record) (*kgo.Record, error) {
	a := *resp
	a.Source, a.Age = core.SourceRealtime, 0
	v, err := encode(router.Response(&a), r)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: w.o.Topics.Results, Key: []byte(resp.RequestID), Value: v,
		Headers: []kgo.RecordHeader{
			{Key: HeaderContentType, Value: []byte(contentType(r))},
			{Key: HeaderRequestID, Value: []byte(resp.RequestID)},
		}}, nil
}

func kindName(k core.Kind) string {
	switch k {
	case core.KindInvalid:
		return "invalid"
	case core.KindNotFound:
		return "not found"
	case core.KindFailedPrecondition:
		return "failed precondition"
	}
	return "internal"
}

// dead is r as a dead letter: its key, value and headers, with why and where.
func (w *Worker) dead(r *kgo.Record, reason string) *kgo.Record {
	h := append([]kgo.RecordHeader(nil), r.Headers...)
	h = append(h,
		kgo.RecordHeader{Key: HeaderError, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: HeaderOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))})
	return &kgo.Record{Topic: w.o.Topics.DeadLetter, Key: r.Key, Value: r.Value, Headers: h}
}

func contentType(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == HeaderContentType && string(h.Value) == ContentJSON {
			return ContentJSON
		}
	}
	return ContentProto
}

func decode(r *kgo.Record, m proto.Message) error {
	if contentType(r) == ContentJSON {
		return protojson.Unmarshal(r.Value, m)
	}
	return proto.Unmarshal(r.Value, m)
}

func encode(m proto.Message, like *kgo.Record) ([]byte, error) {
	if contentType(like) == ContentJSON {
		return protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	}
	return proto.Marshal(m)
}

// decodeRequest decodes and converts a rank request. A request without an
// ID gets one from its position, so that a poll read again gives it the
// same ID (and the same impression IDs).
func decodeRequest(r *kgo.Record) (*core.Request, error) {
	var m routerv1.RankRequest
	if err := decode(r, &m); err != nil {
		return nil, fmt.Errorf("malformed: %v", err)
	}
	req, err := router.Request(&m)
	if err != nil {
		return nil, fmt.Errorf("invalid: %v", err)
	}
	if req.RequestID == "" {
		req.RequestID = fmt.Sprintf("kafka-%s-%d-%d", r.Topic, r.Partition, r.Offset)
	}
	return req, nil
}

func decodeEvent(r *kgo.Record) (core.Event, error) {
	var m routerv1.Event
	if err := decode(r, &m); err != nil {
		return core.Event{}, fmt.Errorf("malformed: %v", err)
	}
	return router.Events(&routerv1.ReportEventsRequest{Events: []*routerv1.Event{&m}})[0], nil
}

// watchLag measures the group's lag every 2 s and logs it when it changes.
func (w *Worker) watchLag(ctx context.Context) {
	cl, err := kgo.NewClient(w.clientOpts()...)
	if err != nil {
		w.o.Log.Warn("stream lag: no admin client", "error", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var last int64 = -1
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		lags, err := adm.Lag(cctx, w.o.Group)
		cancel()
		if err != nil {
			continue
		}
		gl, ok := lags[w.o.Group]
		if !ok || gl.FetchErr != nil || gl.DescribeErr != nil {
			continue
		}
		var out []Lag
		var total int64
		for _, topic := range []string{w.o.Topics.Requests, w.o.Topics.Events} {
			var n int64
			// The consumed topics are written by plain producers, so a
			// drained partition's lag is 0 (no commit markers in them).
			for _, pl := range gl.Lag[topic] {
				n += max(pl.Lag, 0)
			}
			out = append(out, Lag{Topic: topic, Lag: n})
			total += n
		}
		w.mu.Lock()
		w.lag = out
		w.mu.Unlock()
		if total != last {
			w.o.Log.Info("stream consumer lag", "group", w.o.Group, "lag", out)
			last = total
		}
	}
}
