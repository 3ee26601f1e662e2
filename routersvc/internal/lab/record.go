package lab

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/adrank/adrank/routersvc/internal/store"
)

// recorder batches the writes of the serving path: Rank never waits for the
// store. Impressions not yet written are kept in pending so that events can
// join them at once.
type recorder struct {
	st    store.Store
	log   *slog.Logger
	every time.Duration
	ttl   time.Duration

	mu      sync.Mutex
	op      store.Op
	pending map[string]store.Impression
	kick    chan struct{}
}

func newRecorder(st store.Store, log *slog.Logger, every, ttl time.Duration) *recorder {
	return &recorder{st: st, log: log, every: every, ttl: ttl, pending: map[string]store.Impression{}, kick: make(chan struct{}, 1)}
}

// add queues op's parts (no Once: serving writes are not deduplicated).
func (r *recorder) add(op store.Op) {
	r.mu.Lock()
	r.op.Units = append(r.op.Units, op.Units...)
	r.op.Counters = append(r.op.Counters, op.Counters...)
	r.op.Impressions = append(r.op.Impressions, op.Impressions...)
	for _, im := range op.Impressions {
		r.pending[im.ID] = im
	}
	big := len(r.op.Impressions) > 5000
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

// flush writes everything queued as one Op (one transaction). On failure
// the parts are queued again.
func (r *recorder) flush(ctx context.Context) error {
	r.mu.Lock()
	op := r.op
	r.op = store.Op{}
	r.mu.Unlock()
	if len(op.Units)+len(op.Counters)+len(op.Impressions) == 0 {
		return nil
	}
	op.Counters = mergeCounters(op.Counters)
	op.ImpressionTTL = r.ttl
	if _, err := r.st.Apply(ctx, op); err != nil {
		r.add(op)
		return fmt.Errorf("record: %w", err)
	}
	r.mu.Lock()
	for _, im := range op.Impressions {
		delete(r.pending, im.ID)
	}
	r.mu.Unlock()
	return nil
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
}

// ServedResult is one shown ad.
type ServedResult struct {
	ImpressionID string
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
func (l *Lab) Record(s Served) { l.rec.add(l.servedOp(s)) }

// RecordOnce writes served requests' impressions and counters now, in one
// store transaction, once per domain and request ID: a request served
// again (the stream worker's replay of an aborted transaction) changes
// nothing. answers[i], when not nil, is kept with served[i] (written only
// if it is), and shared with all of it; both for ttl. It reports which
// requests were recorded now (false: recorded before).
func (l *Lab) RecordOnce(ctx context.Context, served []Served, answers []map[string][]byte, shared map[string][]byte, ttl time.Duration) ([]bool, error) {
	ops := make([]store.Op, len(served), len(served)+1)
	for i, s := range served {
		op := l.servedOp(s)
		op.Once, op.OnceTTL = "served|"+s.Domain+"|"+s.RequestID, l.impressionTTL()
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
	return applied[:len(served)], nil
}

func (l *Lab) servedOp(s Served) store.Op {
	now := l.o.Now()
	a := s.A
	op := store.Op{}
	for _, r := range s.Results {
		group := a.Group
		if a.Strategy == Interleaved { // the team that contributed the ad
			group = "a"
			if r.Version == a.Other {
				group = "b"
			}
		}
		op.Impressions = append(op.Impressions, store.Impression{
			ID: r.ImpressionID, RequestID: s.RequestID, Domain: s.Domain, UserID: s.UserID,
			Version: r.Version, Strategy: string(a.Strategy), Experiment: a.Experiment, Group: group,
			Propensity: a.Propensity, Slot: r.Slot, Price: r.Price, At: now,
		})
	}
	if len(s.Results) > 0 && a.Strategy != Interleaved {
		op.Units = append(op.Units, store.UnitIncr{Group: groupKey(s.Domain, a.Experiment, a.Group), Unit: s.UserID, N: int64(len(s.Results))})
	}
	if a.Strategy == Bandit {
		op.Counters = append(op.Counters, store.CounterIncr{Key: banditKey(s.Domain, a.Experiment), Field: a.Version + ".n", Delta: float64(len(s.Results))})
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
