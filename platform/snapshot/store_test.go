package snapshot

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/adrank/adrank/platform/redistest"
)

// stores runs the acceptance suite against both stores: the embedded one
// and a real redis-server.
func stores(t *testing.T, test func(t *testing.T, open func() Store)) {
	t.Run("dir", func(t *testing.T) {
		root := t.TempDir()
		test(t, func() Store {
			s, err := OpenDir(root)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		test(t, func() Store {
			s, err := Open(context.Background(), "redis://"+srv.Addr+"/0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
}

func meta(gen string, shards int) Meta {
	return Meta{Domain: "feed", Generation: gen, Version: "v2", ModelSHA256: "abc", Shards: shards, K: 3}
}

// write commits users (user -> entries) to shard i of m in one chunk per
// user and finishes it.
func write(t *testing.T, s Store, m Meta, i int, users map[string][]Entry) (Generation, bool) {
	t.Helper()
	ctx := context.Background()
	sh, err := s.Begin(ctx, m, i)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	p := sh.Progress()
	for u, es := range users {
		p.Pos++
		p.Pairs += int64(len(es))
		p.Users++
		ads := map[string]AdStat{}
		for _, e := range es {
			ads[e.AdID] = AdStat{Sum: e.Pctr, N: 1}
		}
		if err := sh.Commit(ctx, Chunk{Users: map[string][]Entry{u: es}, Ads: ads, Progress: p}); err != nil {
			t.Fatal(err)
		}
	}
	g, ok, err := sh.Finish(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	return g, ok
}

func TestStoreGenerationVisibleOnlyWhenComplete(t *testing.T) {
	stores(t, func(t *testing.T, open func() Store) {
		ctx := context.Background()
		s := open()
		if _, ok, err := s.Latest(ctx, "feed"); ok || err != nil {
			t.Fatalf("empty store: Latest = %v, %v", ok, err)
		}
		g1, ok := write(t, s, meta("g1", 1), 0, map[string][]Entry{"u1": {{"a", 0.5}, {"b", 0.25}}})
		if !ok || g1.Users != 1 || g1.Pairs != 2 {
			t.Fatalf("g1 = %+v, %v", g1, ok)
		}
		// Two shards: the generation appears only with the second.
		m := meta("g2", 2)
		users := map[int]map[string][]Entry{0: {}, 1: {}}
		for _, u := range []string{"u1", "u2", "u3", "u4", "u5", "u6"} {
			users[ShardOf(u, 2)][u] = []Entry{{"c", 0.125}}
		}
		if len(users[0]) == 0 || len(users[1]) == 0 {
			t.Fatalf("hash split all users into one shard: %v", users)
		}
		if _, ok := write(t, s, m, 0, users[0]); ok {
			t.Fatal("a generation was complete with one of two shards")
		}
		latest, ok, err := s.Latest(ctx, "feed")
		if err != nil || !ok || latest.Generation != "g1" {
			t.Fatalf("while g2 is half written, Latest = %+v, %v, %v; want g1", latest, ok, err)
		}
		g2, ok := write(t, s, m, 1, users[1])
		if !ok || g2.Users != 6 || g2.Pairs != 6 || g2.Shards != 2 {
			t.Fatalf("g2 = %+v, %v", g2, ok)
		}
		latest, _, _ = s.Latest(ctx, "feed")
		if latest.Generation != "g2" {
			t.Fatalf("Latest = %s, want g2", latest.Generation)
		}
		for u := range users[1] {
			es, ok, err := s.Lookup(ctx, latest, u)
			if err != nil || !ok || !cmp.Equal(es, []Entry{{"c", 0.125}}) {
				t.Fatalf("Lookup(%s) = %v, %v, %v", u, es, ok, err)
			}
		}
		if _, ok, err := s.Lookup(ctx, latest, "stranger"); ok || err != nil {
			t.Fatalf("Lookup(stranger) = %v, %v", ok, err)
		}
		ads, err := s.Ads(ctx, latest)
		if err != nil || ads["c"].N != 6 || math.Abs(ads["c"].Mean()-0.125) > 1e-15 {
			t.Fatalf("Ads = %v, %v", ads, err)
		}
		// A second reader (another router) sees the same.
		other := open()
		if g, ok, err := other.Latest(ctx, "feed"); err != nil || !ok || g.Generation != "g2" {
			t.Fatalf("second reader: %+v, %v, %v", g, ok, err)
		}
	})
}

func TestStoreResumeAndFence(t *testing.T) {
	stores(t, func(t *testing.T, open func() Store) {
		ctx := context.Background()
		s := open()
		m := meta("g1", 1)
		a, err := s.Begin(ctx, m, 0)
		if err != nil {
			t.Fatal(err)
		}
		p := Progress{Pos: 10, Pairs: 20, Users: 1}
		if err := a.Commit(ctx, Chunk{Users: map[string][]Entry{"u1": {{"x", 0.5}}}, Progress: p}); err != nil {
			t.Fatal(err)
		}
		created := a.Meta().Created
		a.Close() // a killed writer: nothing more
		time.Sleep(2 * time.Millisecond)
		b, err := s.Begin(ctx, m, 0)
		if err != nil {
			t.Fatal(err)
		}
		if b.Progress() != p || !b.Meta().Created.Equal(created) {
			t.Fatalf("resumed at %+v created %v, want %+v created %v", b.Progress(), b.Meta().Created, p, created)
		}
		got, err := b.Existing(ctx, []string{"u1", "u2"})
		if err != nil || !cmp.Equal(got, map[string][]Entry{"u1": {{"x", 0.5}}}) {
			t.Fatalf("Existing = %v, %v", got, err)
		}
		// Another meta for the same generation is refused.
		other := m
		other.Version = "v3"
		if _, err := s.Begin(ctx, other, 0); !errors.Is(err, ErrConflict) {
			t.Fatalf("Begin with another version: %v, want ErrConflict", err)
		}
		if _, ok := s.(*Redis); ok {
			// Two writers of one shard: the one that read the checkpoint
			// before the other committed is fenced off. (bbolt's file lock
			// already keeps a second writer out of the embedded store.)
			c, err := s.Begin(ctx, m, 0)
			if err != nil {
				t.Fatal(err)
			}
			p2 := Progress{Pos: 11, Pairs: 21, Users: 1}
			if err := b.Commit(ctx, Chunk{Progress: p2}); err != nil {
				t.Fatal(err)
			}
			if err := c.Commit(ctx, Chunk{Progress: Progress{Pos: 12}}); !errors.Is(err, ErrFenced) {
				t.Fatalf("stale writer's commit: %v, want ErrFenced", err)
			}
		} else if _, err := s.Begin(ctx, m, 0); err == nil {
			t.Fatal("a second writer opened a shard being written")
		}
		b.Close()
		if _, ok, _ := s.Latest(ctx, "feed"); ok {
			t.Fatal("an unfinished generation is visible")
		}
	})
}

func TestStoreKeepsNewest(t *testing.T) {
	stores(t, func(t *testing.T, open func() Store) {
		ctx := context.Background()
		s := open()
		// An abandoned generation, begun before everything else.
		ab, err := s.Begin(ctx, meta("abandoned", 1), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := ab.Commit(ctx, Chunk{Users: map[string][]Entry{"u1": {{"z", 0.9}}}, Progress: Progress{Pos: 1}}); err != nil {
			t.Fatal(err)
		}
		ab.Close()
		var gens []Generation
		for i := range 4 {
			time.Sleep(2 * time.Millisecond) // distinct creation times
			g, _ := write(t, s, meta(fmt.Sprintf("g%d", i), 1), 0, map[string][]Entry{"u1": {{"a", float64(i) / 10}}})
			gens = append(gens, g)
		}
		listed, err := s.Generations(ctx, "feed")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, g := range listed {
			ids = append(ids, g.Generation)
		}
		if !cmp.Equal(ids, []string{"g3", "g2"}) {
			t.Fatalf("kept %v, want the newest two [g3 g2]", ids)
		}
		es, ok, err := s.Lookup(ctx, listed[1], "u1")
		if err != nil || !ok || es[0].Pctr != 0.2 {
			t.Fatalf("g2's u1 = %v, %v, %v", es, ok, err)
		}
		// The abandoned generation's data is gone: beginning it again
		// starts from nothing.
		again, err := s.Begin(ctx, meta("abandoned", 1), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		if again.Progress() != (Progress{}) {
			t.Fatalf("abandoned generation kept progress %+v", again.Progress())
		}
	})
}

func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []Entry
		k    int
		want []Entry
	}{
		{"best k of both", []Entry{{"a", 0.9}, {"b", 0.1}}, []Entry{{"c", 0.5}}, 2, []Entry{{"a", 0.9}, {"c", 0.5}}},
		{"one entry per ad, the higher", []Entry{{"a", 0.2}}, []Entry{{"a", 0.7}, {"b", 0.1}}, 5, []Entry{{"a", 0.7}, {"b", 0.1}}},
		{"ties by ad ID", []Entry{{"b", 0.5}}, []Entry{{"a", 0.5}}, 1, []Entry{{"a", 0.5}}},
		{"empty", nil, nil, 3, []Entry{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Merge(tc.a, tc.b, tc.k); !cmp.Equal(got, tc.want) {
				t.Fatalf("Merge = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestShardOfSplitsEvenly(t *testing.T) {
	const n, users = 4, 40000
	counts := make([]int, n)
	for i := range users {
		s := ShardOf(fmt.Sprintf("u%d", i), n)
		if s < 0 || s >= n {
			t.Fatalf("ShardOf = %d", s)
		}
		counts[s]++
	}
	// Each count is Binomial(40000, 1/4): sd 87; 6 sd is 520.
	for i, c := range counts {
		if math.Abs(float64(c)-users/n) > 520 {
			t.Fatalf("shard %d got %d users of %d: %v", i, c, users, counts)
		}
	}
	if ShardOf("u1", 1) != 0 {
		t.Fatal("one shard is not shard 0")
	}
}

func TestDecodeRejectsCorrupt(t *testing.T) {
	good := encode([]Entry{{"ad1", 0.5}, {"ad2", 0.25}})
	if es, err := decode(good); err != nil || len(es) != 2 {
		t.Fatalf("decode(good) = %v, %v", es, err)
	}
	for i := range len(good) - 1 {
		if _, err := decode(good[:i]); err == nil {
			t.Fatalf("decode of %d of %d bytes succeeded", i, len(good))
		}
	}
}
