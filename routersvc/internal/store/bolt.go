package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/adrank/adrank/routersvc/internal/stats"
)

var (
	bOnce     = []byte("once")     // key -> expiry (unix nanos)
	bUnits    = []byte("units")    // group \x00 unit -> int64 per stats.Var
	bGroups   = []byte("groups")   // group -> stats.Sums (see readSums)
	bCounters = []byte("counters") // key -> map[field]value
	bDuels    = []byte("duels")    // key \x00 unit -> expiry, a, b
	bImps     = []byte("imps")     // id -> expiry + impression (appendImpression; JSON before)
	bKV       = []byte("kv")       // key -> value
	bResults  = []byte("results")  // key -> expiry, put at (unix nanos), value
	bLogs     = []byte("logs")     // stream \x00 seq (8 bytes) -> expiry, data
	bLogCount = []byte("logcount") // stream -> entries (8 bytes)
	// bExpiry indexes the entries that expire by when: expiry (8 bytes),
	// the bucket's index in expiring (1 byte), key -> nothing. The
	// sweeper reads it from the start and stops at the first entry still
	// live, so its cost is what expired, not what the file holds.
	bExpiry = []byte("expiry")
)

// expiring are the buckets whose values start with their expiry.
var expiring = [][]byte{bOnce, bDuels, bImps, bResults, bLogs}

const (
	expOnce byte = iota
	expDuels
	expImps
	expResults
	expLogs
)

// putExpiring puts a value that starts with its expiry, and indexes it.
func putExpiring(tx *bolt.Tx, bucket byte, key, value []byte) error {
	if err := tx.Bucket(expiring[bucket]).Put(key, value); err != nil {
		return err
	}
	return tx.Bucket(bExpiry).Put(slices.Concat(value[:8], []byte{bucket}, key), nil)
}

// Bolt is the embedded, durable Store: one bbolt file. Every Apply is a
// committed (fsynced) transaction; concurrent Applies share transactions.
type Bolt struct {
	db   *bolt.DB
	now  func() time.Time
	stop chan struct{}
	done sync.WaitGroup
}

// OpenBolt opens (or creates) the store file and starts its sweeper of
// expired entries, which Close stops.
func OpenBolt(path string) (*Bolt, error) {
	// A store of millions of impressions must cost what a fresh one does
	// (make bench, configuration 12): the freelist is kept as a map and not
	// written at every commit (found again by a scan of the file when it is
	// opened, or after a failed commit), and the file's pages are faulted
	// in when it is mapped, not one by one as hashed keys land all over it.
	// The prices: the file stays resident; each remap as it grows (to 1 GB
	// by doubling, then by 1 GB) populates it all again while the store
	// waits; and the scan panics on a damaged file (BENCHMARKS.md).
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType, MmapFlags: mmapFlags})
	if err != nil {
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		indexed := tx.Bucket(bExpiry) != nil
		for _, b := range [][]byte{bOnce, bUnits, bGroups, bCounters, bDuels, bImps, bKV, bResults, bLogs, bLogCount, bExpiry} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if indexed {
			return nil
		}
		// A file from before the index: index what it holds, once.
		for id, name := range expiring {
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				if len(v) < 8 {
					return nil
				}
				return tx.Bucket(bExpiry).Put(slices.Concat(v[:8], []byte{byte(id)}, k), nil)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Bolt{db: db, now: time.Now, stop: make(chan struct{})}
	s.done.Add(1)
	go s.sweep()
	return s, nil
}

func (s *Bolt) sweep() {
	defer s.done.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			for {
				n, err := s.sweepOnce(s.now())
				if err != nil || n < maxSweep {
					break
				}
			}
		}
	}
}

// maxSweep bounds the index entries one sweeping transaction visits.
const maxSweep = 10_000

// sweepOnce deletes up to maxSweep expired entries, oldest first, and
// returns how many index entries it visited: those expired, and none of
// the live ones beyond the first.
func (s *Bolt) sweepOnce(now time.Time) (int, error) {
	visited := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bExpiry)
		var due [][]byte
		c := idx.Cursor()
		for k, _ := c.First(); k != nil && len(due) < maxSweep; k, _ = c.Next() {
			visited++
			if len(k) < 9 || int64(binary.BigEndian.Uint64(k)) >= now.UnixNano() {
				break
			}
			due = append(due, slices.Clone(k))
		}
		for _, k := range due {
			if err := idx.Delete(k); err != nil {
				return err
			}
			id, key := k[8], k[9:]
			if int(id) >= len(expiring) {
				continue
			}
			b := tx.Bucket(expiring[id])
			// An entry put again since has a later expiry (and another
			// index entry): it stays.
			if v := b.Get(key); v == nil || live(v, now) {
				continue
			}
			if err := b.Delete(key); err != nil {
				return err
			}
			if id == expLogs {
				if err := countLog(tx, string(key[:bytes.IndexByte(key, 0)]), -1); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return visited, err
}

// Close stops the sweeper and closes the file.
func (s *Bolt) Close() error {
	close(s.stop)
	s.done.Wait()
	return s.db.Close()
}

func expiry(at time.Time, ttl time.Duration) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(at.Add(ttl).UnixNano()))
	return b
}

func live(v []byte, now time.Time) bool {
	return len(v) >= 8 && int64(binary.BigEndian.Uint64(v)) >= now.UnixNano()
}

func i64(b []byte, at int) int64 { return int64(binary.BigEndian.Uint64(b[at:])) }

// Apply implements Store.
func (s *Bolt) Apply(ctx context.Context, op Op) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var applied bool
	err := s.db.Batch(func(tx *bolt.Tx) error {
		cs := newCounters(tx)
		var err error
		if applied, err = applyTx(tx, cs, op, s.now()); err != nil {
			return err
		}
		return cs.write()
	})
	return applied, err
}

// ApplyAll implements Store: one transaction, written at once (no wait for
// other callers to share it).
func (s *Bolt) ApplyAll(ctx context.Context, ops []Op) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	applied := make([]bool, len(ops))
	err := s.db.Update(func(tx *bolt.Tx) error {
		now := s.now()
		cs := newCounters(tx)
		for i, op := range ops {
			var err error
			if applied[i], err = applyTx(tx, cs, op, now); err != nil {
				return err
			}
		}
		return cs.write()
	})
	return applied, err
}

// applyTx applies op in tx, its counter increments to cs; false when its
// Once was seen.
func applyTx(tx *bolt.Tx, cs *counters, op Op, now time.Time) (bool, error) {
	if op.Once != "" {
		b := tx.Bucket(bOnce)
		if live(b.Get([]byte(op.Once)), now) {
			return false, nil
		}
		if err := putExpiring(tx, expOnce, []byte(op.Once), expiry(now, op.OnceTTL)); err != nil {
			return false, err
		}
	}
	for _, u := range op.Units {
		if err := applyUnit(tx, u); err != nil {
			return false, err
		}
	}
	for _, c := range op.Counters {
		if err := cs.add(c.Key, c.Field, c.Delta); err != nil {
			return false, err
		}
	}
	for _, d := range op.Duels {
		if err := applyDuel(tx, cs, d, now, op.DuelTTL); err != nil {
			return false, err
		}
	}
	for _, im := range op.Impressions {
		if err := putExpiring(tx, expImps, []byte(im.ID), appendImpression(expiry(now, op.ImpressionTTL), im)); err != nil {
			return false, err
		}
	}
	if err := putResults(tx, op.Results, now, op.ResultTTL); err != nil {
		return false, err
	}
	for _, e := range op.Logs {
		if err := appendLog(tx, e, now, op.LogTTL, op.LogMax); err != nil {
			return false, err
		}
	}
	return true, nil
}

// appendLog appends e to its stream and drops the stream's oldest entries
// beyond max.
func appendLog(tx *bolt.Tx, e LogEntry, now time.Time, ttl time.Duration, max int) error {
	if max <= 0 {
		max = DefaultLogMax
	}
	b := tx.Bucket(bLogs)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	prefix := []byte(e.Stream + "\x00")
	key := binary.BigEndian.AppendUint64(slices.Clone(prefix), seq)
	if err := putExpiring(tx, expLogs, key, append(expiry(now, ttl), e.Data...)); err != nil {
		return err
	}
	if err := countLog(tx, e.Stream, 1); err != nil {
		return err
	}
	// The oldest beyond max, at most maxTrim an op (a lowered bound is
	// reached over a few appends): collected, then deleted, as deleting
	// under a cursor can skip keys.
	over := min(int(i64(tx.Bucket(bLogCount).Get([]byte(e.Stream)), 0))-max, maxTrim)
	var old [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); len(old) < over && k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		old = append(old, slices.Clone(k))
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return countLog(tx, e.Stream, -int64(len(old)))
}

// maxTrim bounds the old log entries one append deletes.
const maxTrim = 1000

func countLog(tx *bolt.Tx, stream string, delta int64) error {
	b := tx.Bucket(bLogCount)
	var n int64
	if v := b.Get([]byte(stream)); len(v) == 8 {
		n = i64(v, 0)
	}
	return b.Put([]byte(stream), binary.BigEndian.AppendUint64(nil, uint64(max(n+delta, 0))))
}

// ReadLog implements Store.
func (s *Bolt) ReadLog(ctx context.Context, stream string, fn func(data []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(stream + "\x00")
		now := s.now()
		c := tx.Bucket(bLogs).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !live(v, now) {
				continue
			}
			if err := fn(slices.Clone(v[8:])); err != nil {
				return err
			}
		}
		return nil
	})
}

func putResults(tx *bolt.Tx, results map[string][]byte, now time.Time, ttl time.Duration) error {
	at := make([]byte, 8)
	binary.BigEndian.PutUint64(at, uint64(now.UnixNano()))
	for k, v := range results {
		if err := putExpiring(tx, expResults, []byte(k), slices.Concat(expiry(now, ttl), at, v)); err != nil {
			return err
		}
	}
	return nil
}

func applyUnit(tx *bolt.Tx, u UnitIncr) error {
	ub := tx.Bucket(bUnits)
	key := []byte(u.Group + "\x00" + u.Unit)
	raw := ub.Get(key)
	old := readUnit(raw)
	created := raw == nil
	nu := old
	d := u.delta()
	for i := range nu {
		nu[i] += d[i]
	}
	if created && u.CovariateFrom != "" {
		h := readUnit(ub.Get([]byte(u.CovariateFrom + "\x00" + u.Unit)))
		nu[stats.PreImps], nu[stats.PreClicks], nu[stats.PreRevenue] = h[stats.Imps], h[stats.Clicks], h[stats.Revenue]
	}
	if err := ub.Put(key, writeUnit(nu)); err != nil {
		return err
	}
	gb := tx.Bucket(bGroups)
	sums, err := readSums(gb.Get([]byte(u.Group)))
	if err != nil {
		return err
	}
	sums.Move(old, nu, created)
	return gb.Put([]byte(u.Group), writeSums(sums))
}

// readUnit reads a unit's values: int64s in Var order (16 bytes, impressions
// and clicks, from earlier versions).
func readUnit(v []byte) stats.Unit {
	var u stats.Unit
	for i := 0; i < len(u) && 8*i+8 <= len(v); i++ {
		u[i] = float64(i64(v, 8*i))
	}
	return u
}

func writeUnit(u stats.Unit) []byte {
	v := make([]byte, 0, 8*len(u))
	for _, x := range u {
		v = binary.BigEndian.AppendUint64(v, uint64(int64(x)))
	}
	return v
}

// readSums reads a group's sums: users, then the sums, then the upper
// triangle of the products, as float64s; or the JSON of earlier versions.
func readSums(v []byte) (stats.Sums, error) {
	if len(v) == 0 {
		return stats.Sums{}, nil
	}
	if v[0] == '{' {
		var m map[string]float64
		if err := json.Unmarshal(v, &m); err != nil {
			return stats.Sums{}, err
		}
		return stats.SumsFromFields(m), nil
	}
	f := func() float64 {
		if len(v) < 8 {
			return 0
		}
		x := math.Float64frombits(binary.BigEndian.Uint64(v))
		v = v[8:]
		return x
	}
	s := stats.Sums{Users: f()}
	for i := range stats.NumVars {
		s.S[i] = f()
	}
	for i := range stats.NumVars {
		for j := i; j < stats.NumVars; j++ {
			s.SS[i][j] = f()
			s.SS[j][i] = s.SS[i][j]
		}
	}
	return s, nil
}

func writeSums(s stats.Sums) []byte {
	v := make([]byte, 0, 8*(1+int(stats.NumVars)*(int(stats.NumVars)+3)/2))
	put := func(x float64) { v = binary.BigEndian.AppendUint64(v, math.Float64bits(x)) }
	put(s.Users)
	for i := range stats.NumVars {
		put(s.S[i])
	}
	for i := range stats.NumVars {
		for j := i; j < stats.NumVars; j++ {
			put(s.SS[i][j])
		}
	}
	return v
}

// counters are the counter hashes one transaction changes, each decoded
// once and written back once at its end (write), however many ops and
// fields increment it: a flush of many requests' counters costs one
// decode and one encode per hash, not one per increment.
type counters struct {
	tx   *bolt.Tx
	maps map[string]map[string]float64
}

func newCounters(tx *bolt.Tx) *counters {
	return &counters{tx: tx, maps: map[string]map[string]float64{}}
}

func (c *counters) add(key, field string, delta float64) error {
	m, ok := c.maps[key]
	if !ok {
		m = map[string]float64{}
		if raw := c.tx.Bucket(bCounters).Get([]byte(key)); raw != nil {
			if err := json.Unmarshal(raw, &m); err != nil {
				return err
			}
		}
		c.maps[key] = m
	}
	m[field] += delta
	return nil
}

// write puts every changed hash.
func (c *counters) write() error {
	b := c.tx.Bucket(bCounters)
	for key, m := range c.maps {
		raw, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(key), raw); err != nil {
			return err
		}
	}
	return nil
}

func applyDuel(tx *bolt.Tx, cs *counters, d DuelIncr, now time.Time, ttl time.Duration) error {
	key := []byte(d.Key + "\x00" + d.Unit)
	b := tx.Bucket(bDuels)
	var a0, b0 int64
	if v := b.Get(key); len(v) == 24 && live(v, now) {
		a0, b0 = i64(v, 8), i64(v, 16)
	}
	a1, b1 := a0+d.A, b0+d.B
	v := expiry(now, ttl)
	v = binary.BigEndian.AppendUint64(v, uint64(a1))
	v = binary.BigEndian.AppendUint64(v, uint64(b1))
	if err := putExpiring(tx, expDuels, key, v); err != nil {
		return err
	}
	// Credit per click: the sum over requests of A's clicks minus B's, and
	// of its square.
	d0, d1 := float64(a0-b0), float64(a1-b1)
	if err := cs.add(d.Key, "credit", d1-d0); err != nil {
		return err
	}
	if err := cs.add(d.Key, "credit2", d1*d1-d0*d0); err != nil {
		return err
	}
	if outcome(a0, b0) == "" && outcome(a1, b1) != "" { // requests with a click, counted with the credit
		if err := cs.add(d.Key, "credit_n", 1); err != nil {
			return err
		}
	}
	if o0, o1 := outcome(a0, b0), outcome(a1, b1); o0 != o1 {
		if o0 != "" {
			if err := cs.add(d.Key, o0, -1); err != nil {
				return err
			}
		}
		return cs.add(d.Key, o1, 1)
	}
	return nil
}

// Impression implements Store.
func (s *Bolt) Impression(_ context.Context, id string) (Impression, error) {
	var im Impression
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bImps).Get([]byte(id))
		if !live(v, s.now()) {
			return ErrNotFound
		}
		var err error
		im, err = readImpression(id, v[8:])
		return err
	})
	return im, err
}

// Counters implements Store.
func (s *Bolt) Counters(_ context.Context, key string) (map[string]float64, error) {
	m := map[string]float64{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bCounters).Get([]byte(key)); raw != nil {
			return json.Unmarshal(raw, &m)
		}
		return nil
	})
	return m, err
}

// Group implements Store.
func (s *Bolt) Group(_ context.Context, group string) (stats.Sums, error) {
	var sums stats.Sums
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		sums, err = readSums(tx.Bucket(bGroups).Get([]byte(group)))
		return err
	})
	return sums, err
}

// Get implements Store.
func (s *Bolt) Get(_ context.Context, key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bKV).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// CompareAndSwap implements Store.
func (s *Bolt) CompareAndSwap(_ context.Context, key string, old, new []byte) (bool, error) {
	var swapped bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bKV)
		cur := b.Get([]byte(key))
		if (old == nil) != (cur == nil) || (old != nil && !bytes.Equal(cur, old)) {
			return nil
		}
		swapped = true
		return b.Put([]byte(key), new)
	})
	return swapped, err
}

// Result implements Store.
func (s *Bolt) Result(_ context.Context, key string) ([]byte, time.Time, error) {
	var out []byte
	var at time.Time
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bResults).Get([]byte(key))
		if len(v) < 16 || !live(v, s.now()) {
			return ErrNotFound
		}
		at = time.Unix(0, i64(v, 8))
		out = bytes.Clone(v[16:])
		return nil
	})
	return out, at, err
}
