package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/adrank/adrank/adrankctl/internal/batch"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/logging"
	"github.com/adrank/adrank/platform/snapshot"
)

// batchFlags are `adrankctl batch run`'s flags.
type batchFlags struct {
	cfg          batch.Config
	model        string
	store        string
	shard        string
	require      string
	every        time.Duration
	progress     string
	progressTick time.Duration
	export       string
	world        world.Config
}

func (f *batchFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.cfg.Domain, "domain", "", "domain to score (required)")
	fs.StringVar(&f.cfg.Version, "version", "", "model version (required)")
	fs.StringVar(&f.model, "model", "", "model file (default models/DOMAIN/VERSION.json)")
	fs.StringVar(&f.store, "store", ".data/snapshots", "snapshot store: a directory (embedded, bbolt) or redis://HOST:PORT[/DB]")
	fs.IntVar(&f.cfg.K, "k", 100, "ads kept per user")
	fs.StringVar(&f.shard, "shard", "0/1", "i/N: score the i-th of N hash ranges of users; the generation is complete when all N are")
	fs.StringVar(&f.cfg.Generation, "generation", "", "generation ID, the same for every shard (default VERSION-<start of the period, UTC>; a rerun in the period resumes)")
	fs.StringVar(&f.cfg.Input, "input", "", "a .csv or .parquet file of user_id, ad_id[, feature...] rows (default: every user and ad of the domain in the world)")
	fs.Int64Var(&f.cfg.MaxBad, "max-bad", 0, "bad input rows tolerated; one more fails the job")
	fs.StringVar(&f.require, "require", "", "comma-separated features that may not be missing (a pair missing one is a bad row)")
	fs.IntVar(&f.cfg.Keep, "keep", snapshot.DefaultKeep, "complete generations kept")
	fs.DurationVar(&f.every, "every", 0, "run as a service: a new generation every period (0: run once)")
	fs.IntVar(&f.cfg.ChunkPairs, "chunk", 8192, "pairs scored together")
	fs.DurationVar(&f.cfg.CommitEvery, "commit-every", 2*time.Second, "how often progress is committed (a kill loses at most this much work)")
	fs.IntVar(&f.cfg.Workers, "workers", 0, "scoring goroutines (default GOMAXPROCS)")
	fs.StringVar(&f.progress, "progress", "auto", "bar, log, none or auto (a bar on a terminal, else log lines)")
	fs.DurationVar(&f.progressTick, "progress-every", 10*time.Second, "interval of progress log lines")
	fs.StringVar(&f.export, "export-matrix", "", "benchmark aid: write the model input rows of the first shard as PREFIX.f32 (+ PREFIX.json, PREFIX.go.f32 with adrank's scores) and exit")
	f.world = world.DefaultConfig()
	f.world.RegisterFlags(fs)
}

func parseShard(s string) (int, int, error) {
	i, n, ok := strings.Cut(s, "/")
	a, err1 := strconv.Atoi(i)
	b, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || b < 1 || b > snapshot.MaxShards || a < 0 || a >= b {
		return 0, 0, fmt.Errorf("--shard %q: want i/N with 0 <= i < N <= %d", s, snapshot.MaxShards)
	}
	return a, b, nil
}

// defaultGeneration names the generation of the period that started at t.
func defaultGeneration(version string, every time.Duration, t time.Time) string {
	if every <= 0 {
		every = 24 * time.Hour
	}
	return version + "-" + strings.ToLower(t.UTC().Truncate(every).Format("20060102t150405z"))
}

func runBatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "run" {
		return errors.New("usage: adrankctl batch run --domain D --version V [flags]; see adrankctl batch run -h")
	}
	fs := flag.NewFlagSet("batch run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f batchFlags
	f.register(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("batch run: unexpected argument %q", fs.Arg(0))
	}
	if f.cfg.Domain == "" || f.cfg.Version == "" {
		return errors.New("batch run: --domain and --version are required")
	}
	var err error
	if f.cfg.Shard, f.cfg.Shards, err = parseShard(f.shard); err != nil {
		return err
	}
	if f.require != "" {
		f.cfg.Require = strings.Split(f.require, ",")
	}
	if f.model == "" {
		f.model = "models/" + f.cfg.Domain + "/" + f.cfg.Version + ".json"
	}
	if f.cfg.Model, err = model.Load(f.model); err != nil {
		return err
	}
	f.world.Domains = world.DefaultConfig().Domains
	w, err := world.New(f.world)
	if err != nil {
		return err
	}
	log := logging.New(stderr, "adrankctl-batch", slog.LevelInfo)
	if f.export != "" {
		return batch.Export(f.cfg, w, f.export)
	}
	st, err := snapshot.Open(ctx, f.store)
	if err != nil {
		return err
	}
	defer st.Close()
	once := func(now time.Time) error {
		cfg := f.cfg
		if cfg.Generation == "" {
			cfg.Generation = defaultGeneration(cfg.Version, f.every, now)
		}
		switch p := f.progress; {
		case p == "bar" || p == "auto" && isTerminal(stderr):
			cfg.Progress = batch.NewBar(stderr)
		case p == "log" || p == "auto":
			cfg.Progress = batch.NewLines(log, f.progressTick)
		case p != "none":
			return fmt.Errorf("--progress %q: want bar, log, none or auto", p)
		}
		start := time.Now()
		res, err := batch.Run(ctx, cfg, st, w, log)
		if err != nil {
			return fmt.Errorf("generation %s shard %s: %w", cfg.Generation, f.shard, err)
		}
		took := time.Since(start)
		return json.NewEncoder(stdout).Encode(map[string]any{
			"generation": res.Generation.Generation, "complete": res.Complete, "shard": f.shard,
			"resumed_at": res.ResumedAt, "scored": res.Scored, "bad": res.Bad, "bad_rows": res.BadRows,
			"generation_pairs": res.Generation.Pairs, "generation_users": res.Generation.Users,
			"seconds": took.Seconds(), "pairs_per_second": float64(res.Scored) / took.Seconds(),
		})
	}
	if f.every <= 0 {
		return once(time.Now())
	}
	for {
		now := time.Now()
		if err := once(now); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Error("batch run failed; retrying in a minute (the same generation resumes)", "error", err)
			if !sleep(ctx, time.Minute) {
				return nil
			}
			continue
		}
		next := now.UTC().Truncate(f.every).Add(f.every)
		log.Info("next run", "at", next)
		if !sleep(ctx, time.Until(next)) {
			return nil
		}
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}
