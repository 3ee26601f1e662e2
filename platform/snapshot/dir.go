package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Dir is the embedded store: one directory per generation under
// ROOT/DOMAIN/, one bbolt file per shard, and marker files written by
// rename (atomic on one file system):
//
//	meta.json        the generation's meta, created once (link, not overwrite)
//	shard-I.db       shard I's top Ks, ad stats and checkpoint
//	shard-I.done     shard I's final progress, once it finished
//	COMPLETE         the generation, once every shard finished: visible
//
// Several processes on one machine may use the same directory: writers of
// different shards, and readers, which open finished shard files read-only.
type Dir struct {
	root string
	mu   sync.Mutex
	open map[string][]*bolt.DB // a generation's shards, opened read-only
}

// OpenDir opens (creating) the store at root.
func OpenDir(root string) (*Dir, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	return &Dir{root: root, open: map[string][]*bolt.DB{}}, nil
}

var (
	bucketTop      = []byte("topk")
	bucketAds      = []byte("ads")
	bucketProgress = []byte("progress")
	keyProgress    = []byte("p")
)

func (d *Dir) genDir(domain, gen string) string { return filepath.Join(d.root, domain, gen) }

func shardFile(dir string, i int, ext string) string {
	return filepath.Join(dir, "shard-"+strconv.Itoa(i)+ext)
}

// writeFile writes data to path atomically (temporary file, sync, rename).
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Begin implements Store.
func (d *Dir) Begin(ctx context.Context, m Meta, shard int) (Shard, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	if shard < 0 || shard >= m.Shards {
		return nil, fmt.Errorf("shard %d is outside 0..%d", shard, m.Shards-1)
	}
	dir := d.genDir(m.Domain, m.Generation)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	agreed, err := d.agree(dir, m)
	if err != nil {
		return nil, err
	}
	s := &dirShard{d: d, dir: dir, m: agreed, i: shard}
	if err := readJSON(shardFile(dir, shard, ".done"), &s.p); err == nil {
		return s, nil // finished before: nothing to write
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	s.db, err = bolt.Open(shardFile(dir, shard, ".db"), 0o644, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open shard %d of %s (is another writer running it?): %w", shard, m.Generation, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketTop, bucketAds, bucketProgress} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if v := tx.Bucket(bucketProgress).Get(keyProgress); v != nil {
			return json.Unmarshal(v, &s.p)
		}
		return nil
	})
	if err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// agree creates dir's meta.json from m (with Created now) unless it exists,
// and returns the one in force, refusing another generation's.
func (d *Dir) agree(dir string, m Meta) (Meta, error) {
	path := filepath.Join(dir, "meta.json")
	m.Created = time.Now().UTC()
	b, err := json.Marshal(m)
	if err != nil {
		return Meta{}, err
	}
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	if err := writeFile(tmp, b); err != nil {
		return Meta{}, err
	}
	err = os.Link(tmp, path) // fails if meta.json exists: the first wins
	os.Remove(tmp)
	if err != nil && !errors.Is(err, os.ErrExist) {
		return Meta{}, err
	}
	var got Meta
	if err := readJSON(path, &got); err != nil {
		return Meta{}, err
	}
	if !got.same(m) {
		return Meta{}, fmt.Errorf("%w: %+v, not %+v", ErrConflict, got, m)
	}
	return got, nil
}

// Generations implements Store.
func (d *Dir) Generations(ctx context.Context, domain string) ([]Generation, error) {
	ents, err := os.ReadDir(filepath.Join(d.root, domain))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Generation
	for _, e := range ents {
		var g Generation
		err := readJSON(filepath.Join(d.root, domain, e.Name(), "COMPLETE"), &g)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("generation %s: %w", e.Name(), err)
		}
		out = append(out, g)
	}
	slices.SortFunc(out, newer)
	d.closeStale(domain, out)
	return out, nil
}

// Latest implements Store.
func (d *Dir) Latest(ctx context.Context, domain string) (Generation, bool, error) {
	gs, err := d.Generations(ctx, domain)
	if err != nil || len(gs) == 0 {
		return Generation{}, false, err
	}
	return gs[0], true, nil
}

// closeStale closes the read handles of a domain's generations that are no
// longer listed (pruned).
func (d *Dir) closeStale(domain string, live []Generation) {
	d.mu.Lock()
	defer d.mu.Unlock()
	prefix := d.genDir(domain, "")
	for dir, dbs := range d.open {
		if filepath.Dir(dir) != filepath.Clean(prefix) {
			continue
		}
		if !slices.ContainsFunc(live, func(g Generation) bool { return d.genDir(domain, g.Generation) == dir }) {
			for _, db := range dbs {
				db.Close()
			}
			delete(d.open, dir)
		}
	}
}

// shards opens g's shard files read-only (once).
func (d *Dir) shards(g Generation) ([]*bolt.DB, error) {
	dir := d.genDir(g.Domain, g.Generation)
	d.mu.Lock()
	defer d.mu.Unlock()
	if dbs, ok := d.open[dir]; ok {
		return dbs, nil
	}
	dbs := make([]*bolt.DB, g.Shards)
	for i := range dbs {
		db, err := bolt.Open(shardFile(dir, i, ".db"), 0o444, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			for _, o := range dbs[:i] {
				o.Close()
			}
			return nil, fmt.Errorf("generation %s shard %d: %w", g.Generation, i, err)
		}
		dbs[i] = db
	}
	d.open[dir] = dbs
	return dbs, nil
}

// Lookup implements Store.
func (d *Dir) Lookup(ctx context.Context, g Generation, user string) ([]Entry, bool, error) {
	dbs, err := d.shards(g)
	if err != nil {
		return nil, false, err
	}
	var out []Entry
	var found bool
	err = dbs[ShardOf(user, g.Shards)].View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTop).Get([]byte(user))
		if v == nil {
			return nil
		}
		found = true
		out, err = decode(v)
		return err
	})
	return out, found, err
}

// Ads implements Store.
func (d *Dir) Ads(ctx context.Context, g Generation) (map[string]AdStat, error) {
	dbs, err := d.shards(g)
	if err != nil {
		return nil, err
	}
	out := map[string]AdStat{}
	for _, db := range dbs {
		err := db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketAds).ForEach(func(k, v []byte) error {
				s, err := decodeStat(v)
				t := out[string(k)]
				out[string(k)] = AdStat{Sum: t.Sum + s.Sum, N: t.N + s.N}
				return err
			})
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Close implements Store.
func (d *Dir) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for dir, dbs := range d.open {
		for _, db := range dbs {
			db.Close()
		}
		delete(d.open, dir)
	}
	return nil
}

// prune removes all but the newest keep complete generations of domain, and
// unfinished ones begun before the oldest kept.
func (d *Dir) prune(domain string, keep int) error {
	gs, err := d.Generations(context.Background(), domain)
	if err != nil || len(gs) <= keep {
		return err
	}
	oldest := gs[keep-1].Created
	ents, err := os.ReadDir(filepath.Join(d.root, domain))
	if err != nil {
		return err
	}
	kept := map[string]bool{}
	for _, g := range gs[:keep] {
		kept[g.Generation] = true
	}
	for _, e := range ents {
		if kept[e.Name()] || !e.IsDir() {
			continue
		}
		var m Meta
		if err := readJSON(filepath.Join(d.root, domain, e.Name(), "meta.json"), &m); err == nil && m.Created.After(oldest) {
			continue // a newer generation being written
		}
		// COMPLETE goes first, so a reader never sees half a generation.
		os.Remove(filepath.Join(d.root, domain, e.Name(), "COMPLETE"))
		if err := os.RemoveAll(filepath.Join(d.root, domain, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

type dirShard struct {
	d   *Dir
	dir string
	m   Meta
	i   int
	db  *bolt.DB // nil once finished
	p   Progress
}

func (s *dirShard) Meta() Meta         { return s.m }
func (s *dirShard) Progress() Progress { return s.p }

func (s *dirShard) Existing(ctx context.Context, users []string) (map[string][]Entry, error) {
	out := map[string][]Entry{}
	if s.db == nil {
		return out, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTop)
		for _, u := range users {
			if v := b.Get([]byte(u)); v != nil {
				es, err := decode(v)
				if err != nil {
					return err
				}
				out[u] = es
			}
		}
		return nil
	})
	return out, err
}

func (s *dirShard) Commit(ctx context.Context, c Chunk) error {
	if s.db == nil {
		return fmt.Errorf("shard %d of %s is finished", s.i, s.m.Generation)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		var cur Progress
		if v := tx.Bucket(bucketProgress).Get(keyProgress); v != nil {
			if err := json.Unmarshal(v, &cur); err != nil {
				return err
			}
		}
		if cur != s.p {
			return ErrFenced
		}
		top := tx.Bucket(bucketTop)
		for u, es := range c.Users {
			if err := top.Put([]byte(u), encode(es)); err != nil {
				return err
			}
		}
		ads := tx.Bucket(bucketAds)
		for id, add := range c.Ads {
			var old AdStat
			if v := ads.Get([]byte(id)); v != nil {
				var err error
				if old, err = decodeStat(v); err != nil {
					return err
				}
			}
			if err := ads.Put([]byte(id), encodeStat(AdStat{Sum: old.Sum + add.Sum, N: old.N + add.N})); err != nil {
				return err
			}
		}
		b, err := json.Marshal(c.Progress)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketProgress).Put(keyProgress, b)
	})
	if err == nil {
		s.p = c.Progress
	}
	return err
}

func (s *dirShard) Finish(ctx context.Context, keep int) (Generation, bool, error) {
	if keep < 1 {
		keep = DefaultKeep
	}
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			return Generation{}, false, err
		}
		s.db = nil
		p := s.p
		p.Done = true
		b, err := json.Marshal(p)
		if err != nil {
			return Generation{}, false, err
		}
		if err := writeFile(shardFile(s.dir, s.i, ".done"), b); err != nil {
			return Generation{}, false, err
		}
		s.p = p
	}
	// Every shard writes its .done before looking at the others', so the
	// last to finish sees them all.
	ps := make([]Progress, s.m.Shards)
	for i := range ps {
		err := readJSON(shardFile(s.dir, i, ".done"), &ps[i])
		if errors.Is(err, os.ErrNotExist) {
			return total(s.m, ps), false, nil
		}
		if err != nil {
			return Generation{}, false, err
		}
	}
	g := total(s.m, ps)
	var prev Generation
	if err := readJSON(filepath.Join(s.dir, "COMPLETE"), &prev); err == nil {
		return prev, true, nil
	}
	g.Completed = time.Now().UTC()
	b, err := json.Marshal(g)
	if err != nil {
		return Generation{}, false, err
	}
	if err := writeFile(filepath.Join(s.dir, "COMPLETE"), b); err != nil {
		return Generation{}, false, err
	}
	return g, true, s.d.prune(s.m.Domain, keep)
}

func (s *dirShard) Close() error {
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	return err
}
