package store

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/adrank/adrank/featuresvc/internal/table"
	"github.com/adrank/adrank/ml/featurespec"
	"github.com/adrank/adrank/platform/redistest"
)

func spec(t testing.TB) *featurespec.Spec {
	t.Helper()
	s, err := featurespec.Parse([]byte(`{"entities": [
	  {"name": "user", "keys": ["user_id"], "features": [{"name": "gen", "type": "int"}, {"name": "seg", "type": "string"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rows is n users, every one with gen g.
func rows(t testing.TB, s *featurespec.Spec, n, g int) *table.Rows {
	t.Helper()
	var b strings.Builder
	b.WriteString("user_id,gen,seg\n")
	for i := range n {
		b.WriteString("u" + itoa(i) + "," + itoa(g) + ",s" + itoa(g) + "\n")
	}
	r, err := table.ReadCSV(strings.NewReader(b.String()), s.Entity("user"), table.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func itoa(i int) string { return strconv.Itoa(i) }

// countVersions is how many snapshot versions of an entity the file holds.
func countVersions(t *testing.T, st *Bolt, entity string) int {
	t.Helper()
	n := 0
	err := st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bSnap).Bucket([]byte(entity)).ForEachBucket(func([]byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// backend opens a store of spec s; reopen opens it again over the same
// data (a restart, or another replica).
type backend struct {
	open func(t *testing.T, s *featurespec.Spec) (st Store, reopen func() Store)
}

var backends = map[string]backend{
	"bolt": {open: func(t *testing.T, s *featurespec.Spec) (Store, func() Store) {
		path := filepath.Join(t.TempDir(), "f.db")
		open := func() Store {
			st, err := OpenBolt(path, s, time.Now)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		return open(), open
	}},
	"redis": {open: func(t *testing.T, s *featurespec.Spec) (Store, func() Store) {
		srv := redistest.Start(t)
		open := func() Store {
			st, err := OpenRedis(context.Background(), srv.Addr, "t:", s, time.Now)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		return open(), open
	}},
}

// The acceptance suite: every backend passes the same tests.
func TestAcceptance(t *testing.T) {
	for name, b := range backends {
		t.Run(name, func(t *testing.T) {
			t.Run("swap is atomic for readers", func(t *testing.T) { testSwapIsAtomicForReaders(t, b) })
			t.Run("reopened, it serves the same", func(t *testing.T) { testReopenServesTheSame(t, b) })
			t.Run("online writes", func(t *testing.T) { testOnlineWrites(t, b) })
			t.Run("views across a swap, with online rows", func(t *testing.T) { testViewsAcrossASwapWithOnlineRows(t, b) })
			t.Run("online writes survive a restart before any snapshot", func(t *testing.T) { testOnlineBeforeSnapshot(t, b) })
		})
	}
}

func get(t *testing.T, st Store, key string) (Row, bool) {
	t.Helper()
	r, ok, err := Get(context.Background(), st, "user", key)
	if err != nil {
		t.Fatal(err)
	}
	return r, ok
}

// Readers that read all their rows through one View see one generation,
// never a mix, while snapshots are swapped under them.
func testSwapIsAtomicForReaders(t *testing.T, b backend) {
	s := spec(t)
	st, _ := b.open(t, s)
	defer st.Close()
	ctx := context.Background()
	const n = 2000
	if _, err := st.Swap(ctx, rows(t, s, n, 1), time.Time{}, "g1"); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var mixed, reads atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			var keys []string
			for i := 0; i < n; i += 97 {
				keys = append(keys, "u"+itoa(i))
			}
			for !stop.Load() {
				v, err := st.View(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				// One key per call, as a request reads its entities one
				// after another.
				var first Row
				for i, k := range keys {
					rs, found := make([]Row, 1), make([]bool, 1)
					if err := v.Get(ctx, "user", []string{k}, rs, found); err != nil {
						t.Error(err)
						return
					}
					if i == 0 {
						first = rs[0]
					}
					if !found[0] || rs[0].Nums[0] != first.Nums[0] || rs[0].Strs[0] != first.Strs[0] {
						mixed.Add(1)
					}
				}
				reads.Add(1)
			}
		})
	}
	for g := 2; g <= 20; g++ {
		if _, err := st.Swap(ctx, rows(t, s, n, g), time.Time{}, "g"); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if mixed.Load() != 0 {
		t.Errorf("%d reads saw two generations", mixed.Load())
	}
	if r, _ := get(t, st, "u5"); r.Nums[0] != 20 {
		t.Errorf("after the last swap: gen %v", r.Nums[0])
	}
	t.Logf("%d consistent reads during 19 swaps", reads.Load())
}

// What was loaded and written is served again after a restart (or by
// another replica).
func testReopenServesTheSame(t *testing.T, b backend) {
	s := spec(t)
	ctx := context.Background()
	st, reopen := b.open(t, s)
	for g := 1; g <= 3; g++ {
		if _, err := st.Swap(ctx, rows(t, s, 10, g), time.Time{}, "file"+itoa(g)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Put(ctx, "user", []Update{{Key: []string{"u1"}, Nums: map[string]float64{"gen": 7}, EventTime: time.Now().Add(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = reopen()
	defer st.Close()
	if r, ok := get(t, st, "u2"); !ok || r.Nums[0] != 3 || r.Strs[0] != "s3" {
		t.Errorf("u2 after reopening: %v %v", r, ok)
	}
	if r, _ := get(t, st, "u1"); r.Nums[0] != 7 {
		t.Errorf("u1's online write after reopening: %v", r.Nums)
	}
	sts, err := st.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stat := sts[0]
	if stat.Snapshot == nil || stat.Snapshot.Version != 3 || stat.Snapshot.Source != "file3" || stat.OnlineRows != 1 {
		t.Errorf("status %+v %+v", stat, stat.Snapshot)
	}
}

// Online writes: the latest event time wins; a new key is served with its
// written features; a snapshot whose as_of is later supersedes them, one
// whose as_of is earlier does not; concurrent writers lose nothing.
func testOnlineWrites(t *testing.T, b backend) {
	s := spec(t)
	ctx := context.Background()
	st, _ := b.open(t, s)
	defer st.Close()
	t0 := time.Now()
	if _, err := st.Swap(ctx, rows(t, s, 10, 1), t0.Add(-time.Hour), "a"); err != nil {
		t.Fatal(err)
	}
	put := func(key string, gen float64, at time.Time) {
		t.Helper()
		if err := st.Put(ctx, "user", []Update{{Key: []string{key}, Nums: map[string]float64{"gen": gen}, EventTime: at}}); err != nil {
			t.Fatal(err)
		}
	}
	put("u1", 5, t0)
	put("u1", 4, t0.Add(-time.Minute)) // older: no effect
	put("new", 9, t0)
	if r, _ := get(t, st, "u1"); r.Nums[0] != 5 || r.Strs[0] != "s1" {
		t.Errorf("u1: %v, want gen 5 over its snapshot row", r)
	}
	if r, ok := get(t, st, "new"); !ok || r.Nums[0] != 9 || r.Strs[0] != "" {
		t.Errorf("new: %v %v", r, ok)
	}
	put("u2", 6, t0.Add(-2*time.Hour)) // older than the snapshot: no effect
	if r, _ := get(t, st, "u2"); r.Nums[0] != 1 {
		t.Errorf("a write older than the snapshot changed u2: %v", r)
	}
	// Concurrent writers to many keys, and to one.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				k := "c" + itoa(w*100+i)
				if err := st.Put(ctx, "user", []Update{{Key: []string{k}, Nums: map[string]float64{"gen": float64(i)}, EventTime: t0}}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	sts, _ := st.Status(ctx)
	if sts[0].OnlineRows != 102 {
		t.Errorf("%d online rows after 100 concurrent writes and 2 before, want 102", sts[0].OnlineRows)
	}
	// A snapshot as of now supersedes them all.
	if _, err := st.Swap(ctx, rows(t, s, 10, 2), time.Time{}, "b"); err != nil {
		t.Fatal(err)
	}
	if r, _ := get(t, st, "u1"); r.Nums[0] != 2 {
		t.Errorf("after a later snapshot u1 is %v, want the snapshot's 2", r)
	}
	if _, ok := get(t, st, "new"); ok {
		t.Error("a key only written online survived a later snapshot")
	}
	// The superseded writes are held for views of the snapshot before, and
	// dropped at the next load.
	if _, err := st.Swap(ctx, rows(t, s, 10, 3), time.Time{}, "c"); err != nil {
		t.Fatal(err)
	}
	if sts, _ := st.Status(ctx); sts[0].OnlineRows != 0 {
		t.Errorf("%d online rows after two later snapshots", sts[0].OnlineRows)
	}
}

// A view taken before a swap reads, for a key with an online write that the
// new snapshot supersedes, the write over the snapshot it captured; a view
// taken after reads the new snapshot's row. Online writes the new snapshot
// does not supersede are read over each view's own snapshot.
func testViewsAcrossASwapWithOnlineRows(t *testing.T, b backend) {
	s := spec(t)
	ctx := context.Background()
	st, _ := b.open(t, s)
	defer st.Close()
	t0 := time.Now()
	if _, err := st.Swap(ctx, rows(t, s, 10, 1), t0.Add(-time.Hour), "a"); err != nil {
		t.Fatal(err)
	}
	// u1: a string written before the next snapshot's as_of; u2: after it.
	for _, w := range []struct {
		key string
		at  time.Time
	}{{"u1", t0.Add(-30 * time.Minute)}, {"u2", t0.Add(30 * time.Minute)}} {
		if err := st.Put(ctx, "user", []Update{{Key: []string{w.key}, Strs: map[string]string{"seg": "online"}, EventTime: w.at}}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := st.View(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Swap(ctx, rows(t, s, 10, 2), t0, "b"); err != nil {
		t.Fatal(err)
	}
	after, err := st.View(ctx)
	if err != nil {
		t.Fatal(err)
	}
	read := func(v View, key string) Row {
		rs, found := make([]Row, 1), make([]bool, 1)
		if err := v.Get(ctx, "user", []string{key}, rs, found); err != nil || !found[0] {
			t.Fatalf("%s: %v %v", key, found[0], err)
		}
		return rs[0]
	}
	for _, c := range []struct {
		view      View
		name, key string
		gen       float64
		seg       string
	}{
		{before, "before", "u1", 1, "online"}, // the write, over the snapshot it captured
		{before, "before", "u2", 1, "online"},
		{before, "before", "u3", 1, "s1"},
		{after, "after", "u1", 2, "s2"}, // superseded: the new snapshot's row
		{after, "after", "u2", 2, "online"},
		{after, "after", "u3", 2, "s2"},
	} {
		if r := read(c.view, c.key); r.Nums[0] != c.gen || r.Strs[0] != c.seg {
			t.Errorf("view %s, %s: gen %v seg %q, want %v %q", c.name, c.key, r.Nums[0], r.Strs[0], c.gen, c.seg)
		}
	}
}

// bbolt keeps one snapshot version in its file.
func TestBoltKeepsOneVersion(t *testing.T) {
	s := spec(t)
	st, err := OpenBolt(filepath.Join(t.TempDir(), "f.db"), s, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for g := 1; g <= 3; g++ {
		if _, err := st.Swap(context.Background(), rows(t, s, 10, g), time.Time{}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if versions := countVersions(t, st, "user"); versions != 1 {
		t.Errorf("%d snapshot versions in the file, want 1", versions)
	}
}

// A spec whose entity changed shape refuses the old file, naming the entity.
func TestReopenWithAnotherSpec(t *testing.T) {
	s := spec(t)
	path := filepath.Join(t.TempDir(), "f.db")
	st, _ := OpenBolt(path, s, time.Now)
	if _, err := st.Swap(context.Background(), rows(t, s, 3, 1), time.Time{}, ""); err != nil {
		t.Fatal(err)
	}
	st.Close()
	other, _ := featurespec.Parse([]byte(`{"entities": [{"name": "user", "keys": ["user_id"], "features": [{"name": "gen", "type": "int"}, {"name": "gen2", "type": "int"}, {"name": "seg", "type": "string"}]}]}`))
	if _, err := OpenBolt(path, other, time.Now); err == nil || !strings.Contains(err.Error(), "entity user") {
		t.Errorf("opened a file of another spec: %v", err)
	}
}

// Online writes made before any snapshot are served after a restart, and a
// later snapshot supersedes them, across another restart too.
func testOnlineBeforeSnapshot(t *testing.T, b backend) {
	s := spec(t)
	ctx := context.Background()
	st, reopen := b.open(t, s)
	t0 := time.Now()
	if err := st.Put(ctx, "user", []Update{{Key: []string{"u1"}, Nums: map[string]float64{"gen": 7}, EventTime: t0.Add(-time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = reopen()
	if r, ok := get(t, st, "u1"); !ok || r.Nums[0] != 7 {
		t.Errorf("after a restart: %v %v, want the write", r, ok)
	}
	if _, err := st.Swap(ctx, rows(t, s, 10, 1), t0, "later"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = reopen()
	defer st.Close()
	if r, _ := get(t, st, "u1"); r.Nums[0] != 1 {
		t.Errorf("after a later snapshot and a restart: gen %v, want the snapshot's 1", r.Nums[0])
	}
}
