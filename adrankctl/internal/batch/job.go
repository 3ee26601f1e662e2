// Package batch is the batch deployment's job: it scores every (user,
// eligible ad) pair of a domain with one model version, keeps each user's
// top K, and writes them as a snapshot generation (platform/snapshot) that
// routers serve from. The job streams: pairs are read, scored and reduced
// to top Ks chunk by chunk, so memory stays flat however many pairs there
// are, and each commit carries its checkpoint, so a killed job resumes.
package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/snapshot"
)

// Config is one run of the job: one shard of one generation.
type Config struct {
	Domain, Version string
	Model           *model.File
	// K is how many ads are kept per user.
	K int
	// Shard of Shards: the hash range of users this run scores.
	Shard, Shards int
	// Generation names the snapshot; every shard of it passes the same.
	Generation string
	// Input is a CSV or Parquet file of (user_id, ad_id[, feature...])
	// rows; empty: every user and every ad of the domain in the world.
	Input string
	// MaxBad is how many bad input rows are tolerated; one more fails the
	// job.
	MaxBad int64
	// Require names features that may not be missing: a pair whose value
	// is missing is a bad row.
	Require []string
	// Keep is how many complete generations the store keeps.
	Keep int
	// ChunkPairs is about how many pairs are scored together (default 8192).
	ChunkPairs int
	// CommitEvery is how often progress is committed (default 2s).
	CommitEvery time.Duration
	// Workers score chunks in parallel (default GOMAXPROCS).
	Workers int
	// Progress, when set, is told how far the job is.
	Progress Progress
}

// Progress follows a job.
type Progress interface {
	// Start says the input's unit, where this run resumes and where it ends.
	Start(unit string, done, total int64)
	// Add reports n more units done.
	Add(n int64)
	Finish()
}

// Result is what one run did.
type Result struct {
	Generation snapshot.Generation
	// Complete: every shard of the generation is done; it is visible.
	Complete bool
	// ResumedAt is the input position this run started from (0: fresh).
	ResumedAt int64
	// Scored is how many pairs this run scored and committed.
	Scored int64
	// Bad counts this shard's bad rows; BadRows lists the first of them.
	Bad     int64
	BadRows []BadRow
}

// maxListed bounds Result.BadRows.
const maxListed = 100

// commitTimeout bounds a commit.
const commitTimeout = 10 * time.Second

// ErrTooManyBad fails a job with more bad rows than Config.MaxBad.
var ErrTooManyBad = errors.New("too many bad rows")

func (c *Config) defaults() error {
	if c.Model == nil {
		return errors.New("no model")
	}
	if c.K == 0 {
		c.K = 100
	}
	if c.Shards == 0 {
		c.Shards = 1
	}
	if c.Shard < 0 || c.Shard >= c.Shards {
		return fmt.Errorf("shard %d/%d: want 0 <= i < N", c.Shard, c.Shards)
	}
	if c.ChunkPairs <= 0 {
		c.ChunkPairs = 8192
	}
	if c.CommitEvery <= 0 {
		c.CommitEvery = 2 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.MaxBad < 0 {
		return fmt.Errorf("max-bad %d is negative", c.MaxBad)
	}
	return nil
}

// Run runs one shard of a generation against st, resuming from its
// checkpoint. Cancelling ctx commits what is scored and returns ctx's error;
// running again resumes.
func Run(ctx context.Context, cfg Config, st snapshot.Store, w *world.World, log *slog.Logger) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	lay, err := newLayout(cfg.Model.Model, cfg.Require)
	if err != nil {
		return Result{}, err
	}
	meta := snapshot.Meta{
		Domain: cfg.Domain, Generation: cfg.Generation, Version: cfg.Version,
		ModelSHA256: cfg.Model.SHA256, Shards: cfg.Shards, K: cfg.K,
	}
	sh, err := st.Begin(ctx, meta, cfg.Shard)
	if err != nil {
		return Result{}, err
	}
	defer sh.Close()
	p := sh.Progress()
	res := Result{ResumedAt: p.Pos, Bad: p.Bad}
	if p.Done {
		res.Generation, res.Complete, err = sh.Finish(ctx, cfg.Keep)
		return res, err
	}
	src, err := openSource(cfg, w, lay, p.Pos)
	if err != nil {
		return res, err
	}
	defer src.close()
	if p.Pos > 0 {
		log.Info("resuming from checkpoint", "generation", cfg.Generation, "shard", fmt.Sprintf("%d/%d", cfg.Shard, cfg.Shards),
			"position", p.Pos, "of", src.total(), "unit", src.unit(), "pairs_committed", p.Pairs)
	}
	if cfg.Progress != nil {
		cfg.Progress.Start(src.unit(), p.Pos, src.total())
		defer cfg.Progress.Finish()
	}
	_, repeats := src.(*worldSource)
	r := &run{cfg: cfg, sh: sh, lay: lay, res: &res, repeats: !repeats, log: log}
	if err := r.pipeline(ctx, src); err != nil {
		return res, err
	}
	res.Generation, res.Complete, err = sh.Finish(ctx, cfg.Keep)
	return res, err
}

func openSource(cfg Config, w *world.World, lay *layout, pos int64) (source, error) {
	shard := inShard{cfg.Shard, cfg.Shards}
	res := resolver{w: w, domain: cfg.Domain, shard: shard}
	switch ext := strings.ToLower(filepath.Ext(cfg.Input)); {
	case cfg.Input == "":
		return newWorldSource(w, cfg.Domain, shard, pos)
	case ext == ".csv":
		return newCSVSource(cfg.Input, res, lay.index, pos)
	case ext == ".parquet":
		return newParquetSource(cfg.Input, res, lay.index, pos)
	default:
		return nil, fmt.Errorf("input %s: want a .csv or .parquet file", cfg.Input)
	}
}

// layout maps the world's feature rows onto the model's inputs.
type layout struct {
	m        model.Model
	n        int
	index    map[string]int // feature name -> model input
	shared   []int          // world.SharedColumns[j] -> model input, or -1
	ad       []int          // world.AdColumns[j] -> model input, or -1
	required []int
}

func newLayout(m model.Model, require []string) (*layout, error) {
	names := m.Features()
	l := &layout{m: m, n: len(names), index: map[string]int{}}
	for i, n := range names {
		l.index[n] = i
	}
	cols := func(names []string) []int {
		out := make([]int, len(names))
		for j, n := range names {
			out[j] = -1
			if i, ok := l.index[n]; ok {
				out[j] = i
			}
		}
		return out
	}
	l.shared, l.ad = cols(world.SharedColumns), cols(world.AdColumns)
	for _, r := range require {
		i, ok := l.index[r]
		if !ok {
			return nil, fmt.Errorf("required feature %q is not one of the model's %v", r, names)
		}
		l.required = append(l.required, i)
	}
	return l, nil
}

// scorer is one worker's reusable buffers.
type scorer struct {
	lay      *layout
	base     []float64 // the model inputs of the current user, context missing
	sharedRw []float64
	adRow    []float64
	user     *world.User
	flat     []float64
	xs       [][]float64
	out      []float64
}

func newScorer(lay *layout) *scorer {
	return &scorer{
		lay: lay, base: make([]float64, lay.n),
		sharedRw: make([]float64, len(world.SharedColumns)), adRow: make([]float64, len(world.AdColumns)),
	}
}

// rows fills one model input vector per pair (dropping, as bad rows, pairs
// that miss a required feature) and returns the pairs kept.
func (s *scorer) rows(c *chunk) []pair {
	n := len(c.pairs) * s.lay.n
	if cap(s.flat) < n {
		s.flat = make([]float64, n)
	}
	s.xs = s.xs[:0]
	kept := c.pairs[:0]
	s.user = nil
	for _, p := range c.pairs {
		if p.user != s.user {
			// Batch scoring has no request: the context is unknown, as
			// featuresvc serves it for a request without one.
			world.SharedRow(p.user, world.Context{}, s.sharedRw)
			for i := range s.base {
				s.base[i] = math.NaN()
			}
			for j, i := range s.lay.shared {
				if i >= 0 {
					s.base[i] = s.sharedRw[j]
				}
			}
			s.user = p.user
		}
		k := len(s.xs) * s.lay.n
		x := s.flat[k : k+s.lay.n : k+s.lay.n]
		copy(x, s.base)
		world.AdRow(p.user, p.ad, world.Context{}, s.adRow)
		for j, i := range s.lay.ad {
			if i >= 0 {
				x[i] = s.adRow[j]
			}
		}
		for _, o := range p.over {
			x[o.col] = o.v
		}
		if bad := s.missing(x); bad != "" {
			c.bad = append(c.bad, BadRow{Row: p.row, Reason: "required feature " + bad + " is missing"})
			continue
		}
		kept = append(kept, p)
		s.xs = append(s.xs, x)
	}
	return kept
}

func (s *scorer) missing(x []float64) string {
	for _, i := range s.lay.required {
		if math.IsNaN(x[i]) {
			return s.lay.m.Features()[i]
		}
	}
	return ""
}

func (s *scorer) predict() []float64 {
	if cap(s.out) < len(s.xs) {
		s.out = make([]float64, len(s.xs))
	}
	out := s.out[:len(s.xs)]
	if bm, ok := s.lay.m.(model.BatchModel); ok {
		bm.PredictBatch(s.xs, out)
		return out
	}
	for i, x := range s.xs {
		out[i] = s.lay.m.Predict(x)
	}
	return out
}

// scoredChunk is a chunk reduced: each user's best K of it, and ad stats.
type scoredChunk struct {
	seq        int64
	start, end int64
	users      map[string][]snapshot.Entry
	ads        map[string]snapshot.AdStat
	pairs      int64
	bad        []BadRow
}

func (s *scorer) score(c chunk, k int) scoredChunk {
	pairs := s.rows(&c)
	pctrs := s.predict()
	out := scoredChunk{seq: c.seq, start: c.start, end: c.end, users: map[string][]snapshot.Entry{},
		ads: map[string]snapshot.AdStat{}, pairs: int64(len(pairs)), bad: c.bad}
	tops := map[string]*top{}
	for i, p := range pairs {
		t := tops[p.user.ID]
		if t == nil {
			t = &top{k: k}
			tops[p.user.ID] = t
		}
		e := snapshot.Entry{AdID: p.ad.ID, Pctr: pctrs[i]}
		t.push(e)
		st := out.ads[p.ad.ID]
		out.ads[p.ad.ID] = snapshot.AdStat{Sum: st.Sum + e.Pctr, N: st.N + 1}
	}
	for u, t := range tops {
		out.users[u] = t.sorted()
	}
	return out
}

// run is the state of one Run.
type run struct {
	cfg     Config
	sh      snapshot.Shard
	lay     *layout
	res     *Result
	repeats bool // a user's pairs may span chunks (files): merge with what is committed
	log     *slog.Logger
	// pending is what is scored, in input order, and not yet committed.
	pending struct {
		users map[string][]snapshot.Entry
		ads   map[string]snapshot.AdStat
		p     snapshot.Progress
		since time.Time
	}
}

// pipeline reads chunks, scores them on Workers goroutines, and commits
// their results in input order.
func (r *run) pipeline(ctx context.Context, src source) error {
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan chunk, r.cfg.Workers)
	done := make(chan scoredChunk, r.cfg.Workers)
	g.Go(func() error {
		defer close(work)
		for seq := int64(0); ; seq++ {
			c, err := src.next(r.cfg.ChunkPairs)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			c.seq = seq
			select {
			case work <- c:
			case <-gctx.Done():
				return nil
			}
		}
	})
	workers, wctx := errgroup.WithContext(gctx)
	for range r.cfg.Workers {
		workers.Go(func() error {
			s := newScorer(r.lay)
			for c := range work {
				select {
				case done <- s.score(c, r.cfg.K):
				case <-wctx.Done():
					return nil
				}
			}
			return nil
		})
	}
	g.Go(func() error { defer close(done); return workers.Wait() })
	g.Go(func() error { return r.reduce(gctx, done) })
	err := g.Wait()
	if err == nil {
		err = ctx.Err() // cancelled: what was scored is committed; not done
	}
	return err
}

// reduce takes scored chunks, puts them back in input order and commits
// them every CommitEvery, and once more at the end or when ctx ends (what
// is scored is kept: commits do not take ctx's cancellation, only a
// deadline of their own).
func (r *run) reduce(ctx context.Context, done <-chan scoredChunk) error {
	r.pending.p = r.sh.Progress()
	r.resetPending()
	waiting := map[int64]scoredChunk{}
	var next int64
	for {
		var c scoredChunk
		ok := false
		if ctx.Err() == nil {
			select {
			case c, ok = <-done:
			case <-ctx.Done():
			}
		}
		if !ok {
			return r.commit(ctx)
		}
		waiting[c.seq] = c
		for {
			c, ok := waiting[next]
			if !ok {
				break
			}
			delete(waiting, next)
			next++
			if err := r.add(c); err != nil {
				return err
			}
		}
		if time.Since(r.pending.since) >= r.cfg.CommitEvery {
			if err := r.commit(ctx); err != nil {
				return err
			}
		}
	}
}

func (r *run) resetPending() {
	r.pending.users = map[string][]snapshot.Entry{}
	r.pending.ads = map[string]snapshot.AdStat{}
	r.pending.since = time.Now()
}

// add folds the next chunk (in input order) into what is pending.
func (r *run) add(c scoredChunk) error {
	for u, es := range c.users {
		if old, ok := r.pending.users[u]; ok {
			es = snapshot.Merge(old, es, r.cfg.K)
		}
		r.pending.users[u] = es
	}
	for id, s := range c.ads {
		t := r.pending.ads[id]
		r.pending.ads[id] = snapshot.AdStat{Sum: t.Sum + s.Sum, N: t.N + s.N}
	}
	p := &r.pending.p
	p.Pos, p.Pairs, p.Bad = c.end, p.Pairs+c.pairs, p.Bad+int64(len(c.bad))
	r.res.Bad = p.Bad
	for _, b := range c.bad {
		if len(r.res.BadRows) < maxListed {
			r.res.BadRows = append(r.res.BadRows, b)
			r.log.Warn("bad input row", "row", b.Row, "reason", b.Reason)
		}
	}
	if r.cfg.Progress != nil {
		r.cfg.Progress.Add(c.end - c.start)
	}
	if p.Bad > r.cfg.MaxBad {
		return fmt.Errorf("%w: %d, more than --max-bad %d; the first: %s", ErrTooManyBad, p.Bad, r.cfg.MaxBad, listBad(r.res.BadRows, 5))
	}
	return nil
}

func listBad(bs []BadRow, n int) string {
	var parts []string
	for _, b := range bs[:min(n, len(bs))] {
		parts = append(parts, fmt.Sprintf("row %d: %s", b.Row, b.Reason))
	}
	return strings.Join(parts, "; ")
}

// commit writes what is pending with its checkpoint, in one transaction.
func (r *run) commit(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	p := r.pending.p
	if p == r.sh.Progress() {
		return nil
	}
	users := r.pending.users
	fresh := int64(len(users))
	if r.repeats && len(users) > 0 {
		ids := make([]string, 0, len(users))
		for u := range users {
			ids = append(ids, u)
		}
		old, err := r.sh.Existing(ctx, ids)
		if err != nil {
			return err
		}
		for u, es := range old {
			users[u] = snapshot.Merge(es, users[u], r.cfg.K)
		}
		fresh -= int64(len(old))
	}
	p.Users += fresh
	before := r.sh.Progress().Pairs
	if err := r.sh.Commit(ctx, snapshot.Chunk{Users: users, Ads: r.pending.ads, Progress: p}); err != nil {
		return fmt.Errorf("commit at position %d: %w", p.Pos, err)
	}
	r.res.Scored += p.Pairs - before
	r.pending.p = p
	r.resetPending()
	return nil
}
