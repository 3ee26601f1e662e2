package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/parquet-go/parquet-go"

	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/redistest"
	"github.com/adrank/adrank/platform/snapshot"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixture is a small world and the demo GBDT.
type fixture struct {
	w *world.World
	m *model.File
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	m, err := model.Load("../../../models/feed/v2.json")
	if err != nil {
		t.Fatal(err)
	}
	w, err := world.New(world.Config{Seed: 7, Users: 120, Advertisers: 20, AdsPerDomain: 60, Domains: []string{"feed", "stories"}})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{w: w, m: m}
}

func (f fixture) config(gen string) Config {
	return Config{Domain: "feed", Version: "v2", Model: f.m, K: 5, Generation: gen, ChunkPairs: 100}
}

// stores runs test against the embedded store and a real Redis.
func stores(t *testing.T, test func(t *testing.T, st snapshot.Store)) {
	t.Run("dir", func(t *testing.T) {
		st, err := snapshot.OpenDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		test(t, st)
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		st, err := snapshot.Open(context.Background(), "redis://"+srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		test(t, st)
	})
}

// brute is a user's top k computed another way: the model scorer on
// feature maps by name, as the tools score, and a full sort.
func (f fixture) brute(u *world.User, k int) []snapshot.Entry {
	shared := world.UserFeatures(u)
	for n, v := range world.ContextFeatures(world.Context{}) {
		shared[n] = v
	}
	ads := f.w.Ads("feed")
	var cands []map[string]float64
	for _, a := range ads {
		cands = append(cands, world.AdFeatures(u, a, world.Context{}))
	}
	scores := model.NewScorer(f.m.Model).Score(shared, cands)
	es := make([]snapshot.Entry, len(ads))
	for i, a := range ads {
		es[i] = snapshot.Entry{AdID: a.ID, Pctr: scores[i]}
	}
	snapshot.Sort(es)
	return es[:k]
}

// dump reads every user's top K of g.
func dump(t *testing.T, st snapshot.Store, g snapshot.Generation, users []*world.User) map[string][]snapshot.Entry {
	t.Helper()
	out := map[string][]snapshot.Entry{}
	for _, u := range users {
		es, ok, err := st.Lookup(context.Background(), g, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out[u.ID] = es
		}
	}
	return out
}

func runJob(t *testing.T, ctx context.Context, cfg Config, st snapshot.Store, w *world.World) Result {
	t.Helper()
	res, err := Run(ctx, cfg, st, w, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestJobScoresEveryPair(t *testing.T) {
	f := newFixture(t)
	stores(t, func(t *testing.T, st snapshot.Store) {
		res := runJob(t, context.Background(), f.config("g1"), st, f.w)
		g := res.Generation
		if !res.Complete || g.Pairs != 120*60 || g.Users != 120 || res.Scored != g.Pairs || g.K != 5 || g.ModelSHA256 != f.m.SHA256 {
			t.Fatalf("result %+v", res)
		}
		latest, ok, err := st.Latest(context.Background(), "feed")
		if err != nil || !ok || latest.Generation != "g1" {
			t.Fatalf("Latest = %+v, %v, %v", latest, ok, err)
		}
		got := dump(t, st, latest, f.w.Users())
		for _, u := range f.w.Users() {
			if want := f.brute(u, 5); !cmp.Equal(got[u.ID], want) {
				t.Fatalf("user %s: stored %v, scored directly %v", u.ID, got[u.ID], want)
			}
		}
		ads, err := st.Ads(context.Background(), latest)
		if err != nil || len(ads) != 60 {
			t.Fatalf("Ads: %d, %v", len(ads), err)
		}
		for id, s := range ads {
			if s.N != 120 || s.Mean() <= 0 || s.Mean() >= 1 {
				t.Fatalf("ad %s: %+v", id, s)
			}
		}
	})
}

func TestJobShardsMakeOneGeneration(t *testing.T) {
	f := newFixture(t)
	stores(t, func(t *testing.T, st snapshot.Store) {
		ctx := context.Background()
		whole := runJob(t, ctx, f.config("whole"), st, f.w).Generation
		var last Result
		for i := range 3 {
			cfg := f.config("sharded")
			cfg.Shard, cfg.Shards = i, 3
			last = runJob(t, ctx, cfg, st, f.w)
			if i < 2 {
				if last.Complete {
					t.Fatalf("complete after shard %d of 3", i)
				}
				if g, _, _ := st.Latest(ctx, "feed"); g.Generation != "whole" {
					t.Fatalf("after shard %d of 3, Latest = %s", i, g.Generation)
				}
			}
		}
		if !last.Complete || last.Generation.Pairs != whole.Pairs || last.Generation.Users != whole.Users {
			t.Fatalf("sharded %+v, whole %+v", last.Generation, whole)
		}
		if diff := cmp.Diff(dump(t, st, whole, f.w.Users()), dump(t, st, last.Generation, f.w.Users())); diff != "" {
			t.Fatalf("sharded generation differs from the whole one (-whole +sharded):\n%s", diff)
		}
	})
}

// stopAfter cancels a job once n units are done: a job stopped halfway.
type stopAfter struct {
	n, done int64
	cancel  func()
}

func (s *stopAfter) Start(unit string, done, total int64) {}
func (s *stopAfter) Finish()                              {}
func (s *stopAfter) Add(n int64) {
	if s.done += n; s.done >= s.n {
		s.cancel()
	}
}

// interrupted runs cfg, stopping it after stop units, then resumes it, and
// returns the two results.
func interrupted(t *testing.T, cfg Config, st snapshot.Store, w *world.World, stop int64) (Result, Result) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg.CommitEvery = 1 // commit after every chunk
	cfg.Progress = &stopAfter{n: stop, cancel: cancel}
	first, err := Run(ctx, cfg, st, w, quiet)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped run: %v", err)
	}
	if first.Complete {
		t.Fatal("the stopped run completed")
	}
	if g, ok, _ := st.Latest(context.Background(), "feed"); ok && g.Generation == cfg.Generation {
		t.Fatal("a stopped generation is visible")
	}
	cfg.Progress = nil
	second := runJob(t, context.Background(), cfg, st, w)
	if second.ResumedAt == 0 {
		t.Fatal("the second run did not resume")
	}
	return first, second
}

func TestJobResumesWhereItStopped(t *testing.T) {
	f := newFixture(t)
	pairsFile := writePairs(t, f, nil)
	for _, tc := range []struct {
		name, input string
		stop        int64 // units (users or rows) before the stop
	}{{"world", "", 40}, {"shuffled csv", pairsFile, 2500}} {
		input := tc.input
		t.Run(tc.name, func(t *testing.T) {
			stores(t, func(t *testing.T, st snapshot.Store) {
				cfg := f.config("straight")
				cfg.Input = input
				straight := runJob(t, context.Background(), cfg, st, f.w).Generation
				cfg.Generation = "resumed"
				first, second := interrupted(t, cfg, st, f.w, tc.stop)
				g := second.Generation
				// Every pair is scored and committed once: none twice, none lost.
				if first.Scored+second.Scored != straight.Pairs || g.Pairs != straight.Pairs || g.Users != straight.Users {
					t.Fatalf("stopped run scored %d, resumed run %d, generation %d pairs %d users; straight %d pairs %d users",
						first.Scored, second.Scored, g.Pairs, g.Users, straight.Pairs, straight.Users)
				}
				if diff := cmp.Diff(dump(t, st, straight, f.w.Users()), dump(t, st, g, f.w.Users())); diff != "" {
					t.Fatalf("resumed generation differs (-straight +resumed):\n%s", diff)
				}
			})
		})
	}
}

// writePairs writes every feed pair of the world to a CSV file, shuffled
// (so a user's pairs span chunks), followed by extra lines.
func writePairs(t *testing.T, f fixture, extra []string) string {
	t.Helper()
	var lines []string
	for _, u := range f.w.Users() {
		for _, a := range f.w.Ads("feed") {
			lines = append(lines, u.ID+","+a.ID)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	path := filepath.Join(t.TempDir(), "pairs.csv")
	body := "user_id,ad_id\n" + strings.Join(append(lines, extra...), "\n") + "\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestJobCSVEqualsWorld(t *testing.T) {
	f := newFixture(t)
	st, err := snapshot.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	world := runJob(t, context.Background(), f.config("world"), st, f.w).Generation
	cfg := f.config("csv")
	cfg.Input = writePairs(t, f, nil)
	csv := runJob(t, context.Background(), cfg, st, f.w).Generation
	if diff := cmp.Diff(dump(t, st, world, f.w.Users()), dump(t, st, csv, f.w.Users())); diff != "" {
		t.Fatalf("CSV of every pair differs from the world (-world +csv):\n%s", diff)
	}
}

func TestJobBadRows(t *testing.T) {
	f := newFixture(t)
	u, a := f.w.Users()[0].ID, f.w.Ads("feed")[0].ID
	other := f.w.Ads("stories")[0].ID
	path := filepath.Join(t.TempDir(), "rows.csv")
	body := strings.Join([]string{
		"user_id,ad_id,user_age",
		u + "," + a + ",30",   // line 2: good
		"nobody," + a + ",30", // 3
		u + ",ad-none,30",     // 4
		u + "," + other + ",30",
		u + "," + a, // 6: too few fields
		u + "," + a + ",old",
		u + "," + a + ",", // 8: missing user_age, required
		`"` + u + `,` + a + `,30`,
	}, "\n") + "\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := f.config("bad")
	cfg.Input, cfg.Require, cfg.MaxBad = path, []string{"user_age"}, 100
	st, err := snapshot.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	res := runJob(t, context.Background(), cfg, st, f.w)
	want := []struct {
		row  int64
		says string
	}{
		{3, `unknown user "nobody"`}, {4, `unknown ad "ad-none"`}, {5, `is in domain "stories"`},
		{6, "wrong number of fields"}, {7, `"old" is not a finite number`}, {8, "required feature user_age is missing"},
		{9, "malformed line"},
	}
	if res.Bad != int64(len(want)) || res.Scored != 1 || len(res.BadRows) != len(want) {
		t.Fatalf("bad %d scored %d rows %+v", res.Bad, res.Scored, res.BadRows)
	}
	slices.SortFunc(res.BadRows, func(x, y BadRow) int { return int(x.Row - y.Row) })
	for i, w := range want {
		if b := res.BadRows[i]; b.Row != w.row || !strings.Contains(b.Reason, w.says) {
			t.Errorf("bad row %d: %+v, want line %d saying %q", i, b, w.row, w.says)
		}
	}
	// Past --max-bad the job fails, naming the rows.
	cfg.Generation, cfg.MaxBad = "strict", 2
	_, err = Run(context.Background(), cfg, st, f.w, quiet)
	if !errors.Is(err, ErrTooManyBad) || !strings.Contains(err.Error(), "row 3: unknown user") {
		t.Fatalf("with --max-bad 2: %v", err)
	}
	if g, ok, _ := st.Latest(context.Background(), "feed"); !ok || g.Generation != "bad" {
		t.Fatalf("a failed job changed what is served: %+v", g)
	}
}

type parquetRow struct {
	UserID  string   `parquet:"user_id"`
	AdID    string   `parquet:"ad_id"`
	UserAge *float64 `parquet:"user_age,optional"`
}

func TestJobParquetInput(t *testing.T) {
	f := newFixture(t)
	var rows []parquetRow
	for _, u := range f.w.Users()[:10] {
		for _, a := range f.w.Ads("feed") {
			age := float64(u.Age)
			rows = append(rows, parquetRow{UserID: u.ID, AdID: a.ID, UserAge: &age})
		}
	}
	rows = append(rows, parquetRow{UserID: "nobody", AdID: f.w.Ads("feed")[0].ID}, parquetRow{UserID: f.w.Users()[0].ID, AdID: f.w.Ads("feed")[0].ID})
	path := filepath.Join(t.TempDir(), "pairs.parquet")
	if err := parquet.WriteFile(path, rows); err != nil {
		t.Fatal(err)
	}
	st, err := snapshot.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := f.config("parquet")
	cfg.Input, cfg.Require, cfg.MaxBad = path, []string{"user_age"}, 5
	res := runJob(t, context.Background(), cfg, st, f.w)
	n := int64(len(rows))
	if res.Scored != n-2 || res.Bad != 2 {
		t.Fatalf("scored %d bad %d %+v", res.Scored, res.Bad, res.BadRows)
	}
	if res.BadRows[0].Row != n-1 || !strings.Contains(res.BadRows[0].Reason, "unknown user") ||
		res.BadRows[1].Row != n || !strings.Contains(res.BadRows[1].Reason, "user_age is missing") {
		t.Fatalf("bad rows %+v, want rows %d and %d", res.BadRows, n-1, n)
	}
	got := dump(t, st, res.Generation, f.w.Users())
	if len(got) != 10 {
		t.Fatalf("%d users in the snapshot, want 10", len(got))
	}
	for _, u := range f.w.Users()[:10] {
		if want := f.brute(u, 5); !cmp.Equal(got[u.ID], want) {
			t.Fatalf("user %s: %v, want %v", u.ID, got[u.ID], want)
		}
	}
	// Resuming mid-file seeks to the row.
	cfg.Generation = "parquet-resumed"
	_, second := interrupted(t, cfg, st, f.w, 250)
	if diff := cmp.Diff(got, dump(t, st, second.Generation, f.w.Users())); diff != "" {
		t.Fatalf("resumed parquet job differs:\n%s", diff)
	}
}

func TestJobRefusesBadConfig(t *testing.T) {
	f := newFixture(t)
	st, err := snapshot.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		says string
	}{
		{"shard out of range", func(c *Config) { c.Shard, c.Shards = 3, 3 }, "shard 3/3"},
		{"unknown required feature", func(c *Config) { c.Require = []string{"shoe_size"} }, `"shoe_size"`},
		{"bad generation name", func(c *Config) { c.Generation = "Not Valid" }, "generation"},
		{"unknown input format", func(c *Config) { c.Input = "pairs.xlsx" }, ".csv or .parquet"},
		{"unknown column", func(c *Config) { c.Input = writeFile(t, "user_id,ad_id,shoe_size\n") }, `"shoe_size"`},
		{"no ad column", func(c *Config) { c.Input = writeFile(t, "user_id\n") }, "lacks user_id or ad_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.config("cfg")
			tc.edit(&cfg)
			_, err := Run(context.Background(), cfg, st, f.w, quiet)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want one saying %q", err, tc.says)
			}
		})
	}
	// Another version for a generation begun with v2 is refused.
	runJob(t, context.Background(), f.config("g"), st, f.w)
	cfg := f.config("g")
	cfg.Version = "v3"
	if _, err := Run(context.Background(), cfg, st, f.w, quiet); !errors.Is(err, snapshot.ErrConflict) {
		t.Fatalf("another version for an existing generation: %v", err)
	}
}

func writeFile(t *testing.T, body string) string {
	path := filepath.Join(t.TempDir(), fmt.Sprintf("f%d.csv", len(body)))
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
