package lab

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/adrank/adrank/routersvc/internal/store"
)

// recorder batches the writes of the serving path: Rank never waits for the
// store. Impressions not yet written are kept in pending so that events can
// join them at once.
//
// Each queued op keeps its own Once, and a flush writes them all in one
// transaction (ApplyAll). When that fails, each op is tried on its own: the
// ops that still fail while others succeed are bad records (too large for
// the store, say) and are dropped, counted and logged, so that one bad
// record never blocks the others. When every op fails, the store itself is
// failing: all of them are queued again, up to maxQueued ops (beyond, the
// oldest are dropped and counted), and an op that has failed maxTries
// flushes is dropped too.
type recorder struct {
	st    store.Store
	log   *slog.Logger
	every time.Duration
	ttl   time.Duration
	// activity hears the impressions written for the first time.
	activity func([]Activity)

	// flushing serializes flushes: a Flush called while the periodic one
	// writes waits for that write, so that what was recorded before it is
	// in the store when it returns.
	flushing sync.Mutex

	mu      sync.Mutex
	ops     []queued
	pending map[string]store.Impression
	kick    chan struct{}
	dropped float64
	lastErr string
}

type queued struct {
	op    store.Op
	tries int
}

// Bounds of the recorder's queue.
const (
	maxQueued = 200_000
	maxTries  = 20
)

func newRecorder(st store.Store, log *slog.Logger, every, ttl time.Duration) *recorder {
	return &recorder{st: st, log: log, every: every, ttl: ttl, pending: map[string]store.Impression{}, kick: make(chan struct{}, 1)}
}

// add queues op.
func (r *recorder) add(op store.Op) {
	r.mu.Lock()
	op.ImpressionTTL = r.ttl
	op.Counters = mergeCounters(op.Counters)
	r.ops = append(r.ops, queued{op: op})
	for _, im := range op.Impressions {
		r.pending[im.ID] = im
	}
	big := len(r.ops) > 2000
	r.mu.Unlock()
	if big {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

func (r *recorder) impression(id string) (store.Impression, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	im, ok := r.pending[id]
	return im, ok
}

// health is how many records were dropped, and the last write error.
func (r *recorder) health() (float64, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped, r.lastErr
}

func (r *recorder) run(ctx context.Context) error {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Write what is left, with a bounded context of its own.
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return r.flush(fctx)
		case <-t.C:
		case <-r.kick:
		}
		if err := r.flush(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("experiment state write failed; will retry", "error", err)
		}
	}
}

// flush writes what is queued (see recorder).
func (r *recorder) flush(ctx context.Context) error {
	r.flushing.Lock()
	defer r.flushing.Unlock()
	r.mu.Lock()
	qs := r.ops
	r.ops = nil
	r.mu.Unlock()
	if len(qs) == 0 {
		return nil
	}
	ops := make([]store.Op, len(qs))
	for i, q := range qs {
		ops[i] = q.op
	}
	if applied, err := r.st.ApplyAll(ctx, ops); err == nil {
		r.written(ops)
		r.report(ops, applied)
		return nil
	}
	var ok []store.Op
	var okApplied []bool
	var failed []queued
	var last error
	for _, q := range qs {
		applied, err := r.st.Apply(ctx, q.op)
		if err != nil {
			q.tries++
			failed, last = append(failed, q), err
			continue
		}
		ok, okApplied = append(ok, q.op), append(okApplied, applied)
	}
	r.written(ok)
	r.report(ok, okApplied)
	if len(failed) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = last.Error()
	var requeue []queued
	drop := 0
	for _, q := range failed {
		if len(ok) > 0 || q.tries >= maxTries {
			drop++
			r.forget(q.op)
			continue
		}
		requeue = append(requeue, q)
	}
	r.ops = append(requeue, r.ops...)
	if over := len(r.ops) - maxQueued; over > 0 {
		for _, q := range r.ops[:over] {
			r.forget(q.op)
		}
		r.ops = r.ops[over:]
		drop += over
	}
	r.dropped += float64(drop)
	if drop > 0 {
		r.log.Error("experiment state records dropped: the store refused them", "dropped", drop, "error", last)
	}
	return fmt.Errorf("record: %d of %d records failed: %w", len(failed), len(qs), last)
}

// report passes the impressions of the ops applied now (not before: a
// request recorded again) to the activity sink.
func (r *recorder) report(ops []store.Op, applied []bool) {
	if r.activity != nil {
		r.activity(impressionActivity(ops, applied))
	}
}

// impressionActivity is the applied ops' impressions, as activity.
func impressionActivity(ops []store.Op, applied []bool) []Activity {
	var out []Activity
	for i, op := range ops {
		if i >= len(applied) || !applied[i] {
			continue
		}
		for _, im := range op.Impressions {
			if im.AdID != "" {
				out = append(out, Activity{UserID: im.UserID, AdID: im.AdID, At: im.At, Impressions: 1})
			}
		}
	}
	return out
}

// written forgets the pending impressions of ops that are in the store.
func (r *recorder) written(ops []store.Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, op := range ops {
		r.forget(op)
	}
}

// forget drops op's impressions from pending; r.mu is held.
func (r *recorder) forget(op store.Op) {
	for _, im := range op.Impressions {
		delete(r.pending, im.ID)
	}
}

// mergeCounters sums increments of the same key and field. (Units need no
// merging: a group's sums depend only on each user's final counts.)
func mergeCounters(cs []store.CounterIncr) []store.CounterIncr {
	type kf struct{ k, f string }
	idx := map[kf]int{}
	var out []store.CounterIncr
	for _, c := range cs {
		if i, ok := idx[kf{c.Key, c.Field}]; ok {
			out[i].Delta += c.Delta
			continue
		}
		idx[kf{c.Key, c.Field}] = len(out)
		out = append(out, c)
	}
	return out
}

// Keys of the store's counters and groups.
func groupKey(domain, exp, group string) string     { return domain + "|" + exp + "|" + group }
func healthKey(domain string) string                { return "health|" + domain }
func experimentHealthKey(domain, exp string) string { return "health|" + domain + "|" + exp }
func outcomesKey(group string) string               { return "outcomes|" + group }
func banditKey(domain, exp string) string           { return "bandit|" + domain + "|" + exp }
func duelKey(domain, exp string) string             { return "duel|" + domain + "|" + exp }
func shadowKey(domain, version string) string       { return "shadow|" + domain + "|" + version }

// historyKey is the group that keeps each user's history in the domain,
// whatever served them: the covariate a user brings into an experiment.
func historyKey(domain string) string { return "history|" + domain }

const eventsKey = "events"

// Served is one answered request, for the record.
type Served struct {
	Domain    string
	UserID    string
	RequestID string
	A         Assignment
	Results   []ServedResult
	// Calls are the ranker calls made, for version health.
	Calls []Call
	// OPE, when set, logs the request for off-policy evaluation.
	OPE *OPERecord
	// Edge: served on a device. Edge requests are recorded once per
	// request ID apart from online ones, so that a device reporting an
	// online request's ID cannot displace it.
	Edge bool
}

// ServedResult is one shown ad.
type ServedResult struct {
	ImpressionID string
	AdID         string
	Slot         int
	Price        int64
	Version      string // with interleaving, the team's version
}

// Call is one ranker call.
type Call struct {
	Version  string
	Latency  time.Duration
	Failed   bool
	Fallback bool // production served instead of this version
}

// Record queues a served request's impressions and counters.
//
// A request is recorded once per domain and request ID: the same request
// sent again (a client's retry) gets the same answer and is not counted
// again.
func (l *Lab) Record(s Served) {
	l.o.Observe.Served(s)
	op := l.servedOp(s)
	op.Once, op.OnceTTL = servedOnce(s), l.impressionTTL()
	l.rec.add(op)
}

// servedOnce is the key that records a served request once.
func servedOnce(s Served) string {
	if s.Edge {
		return "edge|" + s.Domain + "|" + s.RequestID
	}
	return "served|" + s.Domain + "|" + s.RequestID
}

// RecordOnce writes served requests' impressions and counters now, in one
// store transaction, once per domain and request ID: a request served
// again (the stream worker's replay of an aborted transaction) changes
// nothing. answers[i], when not nil, is kept with served[i] (written only
// if it is), and shared with all of it; both for ttl. It reports which
// requests were recorded now (false: recorded before).
func (l *Lab) RecordOnce(ctx context.Context, served []Served, answers []map[string][]byte, shared map[string][]byte, ttl time.Duration) ([]bool, error) {
	ops := make([]store.Op, len(served), len(served)+1)
	for i, s := range served {
		l.o.Observe.Served(s)
		op := l.servedOp(s)
		op.Once, op.OnceTTL = servedOnce(s), l.impressionTTL()
		op.Counters = mergeCounters(op.Counters)
		op.ImpressionTTL = l.impressionTTL()
		if i < len(answers) {
			op.Results, op.ResultTTL = answers[i], ttl
		}
		ops[i] = op
	}
	if len(shared) > 0 {
		ops = append(ops, store.Op{Results: shared, ResultTTL: ttl})
	}
	applied, err := l.o.Store.ApplyAll(ctx, ops)
	if err != nil {
		return nil, err
	}
	if l.o.Activity != nil {
		l.o.Activity(impressionActivity(ops[:len(served)], applied))
	}
	return applied[:len(served)], nil
}

func (l *Lab) servedOp(s Served) store.Op {
	now := l.o.Now()
	a := s.A
	op := store.Op{}
	for _, r := range s.Results {
		group := a.Group
		if a.Strategy == Interleaved { // the team that contributed the ad
			group = AgreedGroup
			if i := slices.Index(a.Teams, r.Version); i >= 0 && r.Slot > a.Agreed {
				group = teamGroup(i, len(a.Teams))
			}
		}
		op.Impressions = append(op.Impressions, store.Impression{
			ID: r.ImpressionID, RequestID: s.RequestID, Domain: s.Domain, UserID: s.UserID, AdID: r.AdID,
			Version: r.Version, Strategy: string(a.Strategy), Experiment: a.Experiment, Group: group,
			Propensity: a.Propensity, Slot: r.Slot, Price: r.Price, At: now, OPE: s.OPE != nil,
		})
	}
	if s.OPE != nil {
		l.logOPE(&op, s.Domain, a.explore, s.OPE)
	}
	if n := int64(len(s.Results)); n > 0 {
		if a.Strategy != Interleaved {
			op.Units = append(op.Units, store.UnitIncr{Group: groupKey(s.Domain, a.Experiment, a.Group), Unit: s.UserID, N: n, CovariateFrom: historyKey(s.Domain)})
		}
		// After the group's unit, which copies the history as it was.
		op.Units = append(op.Units, store.UnitIncr{Group: historyKey(s.Domain), Unit: s.UserID, N: n})
	}
	if a.Strategy == Bandit {
		// Exposure: impressions weighted by the chance that their slot
		// is examined (see experiment.Bandit.PositionBias).
		var w float64
		for _, r := range s.Results {
			w += a.bandit.Exposure(r.Slot)
		}
		op.Counters = append(op.Counters,
			store.CounterIncr{Key: banditKey(s.Domain, a.Experiment), Field: a.Version + ".n", Delta: float64(len(s.Results))},
			store.CounterIncr{Key: banditKey(s.Domain, a.Experiment), Field: a.Version + ".w", Delta: w},
			store.CounterIncr{Key: banditKey(s.Domain, a.Experiment), Field: a.Version + ".nw", Delta: float64(len(s.Results))})
	}
	// Version health for the report, and again per experiment for its
	// guardrails (so that an earlier run does not count against it).
	keys := []string{healthKey(s.Domain)}
	if a.Experiment != "" {
		keys = append(keys, experimentHealthKey(s.Domain, a.Experiment))
	}
	for _, hk := range keys {
		for _, c := range s.Calls {
			op.Counters = append(op.Counters,
				store.CounterIncr{Key: hk, Field: c.Version + ".requests", Delta: 1},
				store.CounterIncr{Key: hk, Field: fmt.Sprintf("%s.lat.%d", c.Version, latencyBucket(c.Latency)), Delta: 1})
			if c.Failed {
				op.Counters = append(op.Counters, store.CounterIncr{Key: hk, Field: c.Version + ".errors", Delta: 1})
			}
			if c.Fallback {
				op.Counters = append(op.Counters, store.CounterIncr{Key: hk, Field: c.Version + ".fallbacks", Delta: 1})
			}
		}
	}
	return op
}
