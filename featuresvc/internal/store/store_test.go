package store

import (
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
func countVersions(t *testing.T, st *Store, entity string) int {
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

// Readers that read all their rows through one View see one generation,
// never a mix, while snapshots are swapped under them.
func TestSwapIsAtomicForReaders(t *testing.T) {
	s := spec(t)
	st, err := Open(filepath.Join(t.TempDir(), "f.db"), s, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const n = 2000
	if _, err := st.Swap(rows(t, s, n, 1), time.Time{}, "g1"); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var mixed, reads atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				v := st.View()
				first, _ := v.Get("user", "u0")
				for i := 1; i < n; i += 97 {
					r, ok := v.Get("user", "u"+itoa(i))
					if !ok || r.Nums[0] != first.Nums[0] || r.Strs[0] != first.Strs[0] {
						mixed.Add(1)
					}
				}
				reads.Add(1)
			}
		})
	}
	for g := 2; g <= 20; g++ {
		if _, err := st.Swap(rows(t, s, n, g), time.Time{}, "g"); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if mixed.Load() != 0 {
		t.Errorf("%d reads saw two generations", mixed.Load())
	}
	if r, _ := st.Get("user", "u5"); r.Nums[0] != 20 {
		t.Errorf("after the last swap: gen %v", r.Nums[0])
	}
	t.Logf("%d consistent reads during 19 swaps", reads.Load())
}

// What was loaded and written is served again after a restart; earlier
// versions are gone from the file.
func TestReopenServesTheSame(t *testing.T) {
	s := spec(t)
	path := filepath.Join(t.TempDir(), "f.db")
	st, err := Open(path, s, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for g := 1; g <= 3; g++ {
		if _, err := st.Swap(rows(t, s, 10, g), time.Time{}, "file"+itoa(g)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Put("user", []Update{{Key: []string{"u1"}, Nums: map[string]float64{"gen": 7}, EventTime: time.Now().Add(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = Open(path, s, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if r, ok := st.Get("user", "u2"); !ok || r.Nums[0] != 3 || r.Strs[0] != "s3" {
		t.Errorf("u2 after reopening: %v %v", r, ok)
	}
	if r, _ := st.Get("user", "u1"); r.Nums[0] != 7 {
		t.Errorf("u1's online write after reopening: %v", r.Nums)
	}
	stat := st.Status()[0]
	if stat.Snapshot == nil || stat.Snapshot.Version != 3 || stat.Snapshot.Source != "file3" || stat.OnlineRows != 1 {
		t.Errorf("status %+v %+v", stat, stat.Snapshot)
	}
	if versions := countVersions(t, st, "user"); versions != 1 {
		t.Errorf("%d snapshot versions in the file, want 1", versions)
	}
}

// A spec whose entity changed shape refuses the old file, naming the entity.
func TestReopenWithAnotherSpec(t *testing.T) {
	s := spec(t)
	path := filepath.Join(t.TempDir(), "f.db")
	st, _ := Open(path, s, time.Now)
	if _, err := st.Swap(rows(t, s, 3, 1), time.Time{}, ""); err != nil {
		t.Fatal(err)
	}
	st.Close()
	other, _ := featurespec.Parse([]byte(`{"entities": [{"name": "user", "keys": ["user_id"], "features": [{"name": "gen", "type": "int"}, {"name": "gen2", "type": "int"}, {"name": "seg", "type": "string"}]}]}`))
	if _, err := Open(path, other, time.Now); err == nil || !strings.Contains(err.Error(), "entity user") {
		t.Errorf("opened a file of another spec: %v", err)
	}
}
