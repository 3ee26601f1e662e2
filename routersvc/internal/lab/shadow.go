package lab

import (
	"context"
	"fmt"
	"time"

	"github.com/adrank/adrank/routersvc/internal/stats"
	"github.com/adrank/adrank/routersvc/internal/store"
)

// ShadowScore scores the shadowed request's candidates with one version.
type ShadowScore func(ctx context.Context, version string) ([]float64, error)

type shadowJob struct {
	domain   string
	versions []string
	score    ShadowScore
	prod     []float64
	k        int
}

// Shadow queues the request for the shadow versions without ever blocking:
// when the queue is full the job is dropped and counted. prod are
// production's scores and k the slots, for the comparison.
func (l *Lab) Shadow(domain string, versions []string, score ShadowScore, prod []float64, k int) {
	select {
	case l.shadow <- shadowJob{domain: domain, versions: versions, score: score, prod: prod, k: k}:
	default:
		var op store.Op
		for _, v := range versions {
			op.Counters = append(op.Counters, store.CounterIncr{Key: shadowKey(domain, v), Field: "dropped", Delta: 1})
			l.o.Observe.ShadowDropped(domain, v)
		}
		l.rec.add(op)
	}
}

func (l *Lab) shadowWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-l.shadow:
			for _, v := range job.versions {
				l.compare(ctx, job, v)
			}
		}
	}
}

// compare scores the job with a shadow version and records how it compares
// with production.
func (l *Lab) compare(ctx context.Context, job shadowJob, version string) {
	key := shadowKey(job.domain, version)
	add := func(op *store.Op, field string, d float64) {
		op.Counters = append(op.Counters, store.CounterIncr{Key: key, Field: field, Delta: d})
	}
	cctx, cancel := context.WithTimeout(ctx, l.o.ShadowTimeout)
	start := time.Now()
	scores, err := job.score(cctx, version)
	took := time.Since(start)
	cancel()
	var op store.Op
	add(&op, fmt.Sprintf("lat.%d", latencyBucket(took)), 1)
	if err != nil || len(scores) != len(job.prod) {
		if ctx.Err() != nil {
			return
		}
		add(&op, "errors", 1)
		l.rec.add(op)
		return
	}
	add(&op, "compared", 1)
	add(&op, "overlap", stats.TopKOverlap(job.prod, scores, job.k))
	if tau := stats.KendallTau(job.prod, scores); tau == tau {
		add(&op, "tau", tau)
		add(&op, "tau_n", 1)
	}
	for i := range scores {
		add(&op, "prod_sum", job.prod[i])
		add(&op, "shadow_sum", scores[i])
		add(&op, fmt.Sprintf("prod_bin.%d", stats.Bin(job.prod[i])), 1)
		add(&op, fmt.Sprintf("shadow_bin.%d", stats.Bin(scores[i])), 1)
	}
	op.Counters = mergeCounters(op.Counters)
	l.rec.add(op)
}
