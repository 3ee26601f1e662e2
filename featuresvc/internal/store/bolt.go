package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/adrank/adrank/featuresvc/internal/table"
	"github.com/adrank/adrank/ml/featurespec"
)

var (
	bMeta   = []byte("meta")   // entity -> snapshotMeta (JSON)
	bSnap   = []byte("snap")   // entity / version -> key -> row
	bOnline = []byte("online") // entity -> key -> onlineRecord (JSON)
)

// Bolt is the feature store in one bbolt file, served from memory: the
// embedded default. It is safe for concurrent use.
type Bolt struct {
	spec *featurespec.Spec
	db   *bolt.DB
	now  func() time.Time
	ents entities
	load sync.Mutex // one snapshot load at a time
}

type entity struct {
	spec    *featurespec.Entity
	numeric []*featurespec.Feature
	strs    []*featurespec.Feature
	snap    atomic.Pointer[snapshot]
	mu      sync.RWMutex
	online  map[string]*onlineRow
}

// snapshot is one immutable version of an entity's rows.
type snapshot struct {
	Meta
	index map[string]int32
	nums  []float64
	strs  []string
}

// onlineRow is a key's online writes, merged over its snapshot row.
type onlineRow struct {
	rec  onlineRecord
	base *snapshot // the version nums and strs are merged over
	nums []float64
	strs []string
}

// Open opens (or creates) the store at path for spec, and loads what it
// holds into memory. Snapshots of entities the spec no longer declares are
// ignored; a snapshot whose columns no longer match the spec is refused.
func OpenBolt(path string, spec *featurespec.Spec, now func() time.Time) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("feature store %s: %w", path, err)
	}
	s := &Bolt{spec: spec, db: db, now: now, ents: newEntities(spec)}
	if err := s.loadAll(); err != nil {
		db.Close()
		return nil, fmt.Errorf("feature store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file.
func (s *Bolt) Close() error { return s.db.Close() }

// Spec is the store's spec.
func (s *Bolt) Spec() *featurespec.Spec { return s.spec }

func (s *Bolt) loadAll() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bMeta, bSnap, bOnline} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		for name, e := range s.ents {
			sn, err := e.loadSnapshot(tx)
			if err != nil {
				return err
			}
			if sn != nil {
				e.snap.Store(sn)
			}
			ob := tx.Bucket(bOnline).Bucket([]byte(name))
			if ob == nil {
				continue
			}
			var superseded [][]byte
			err = ob.ForEach(func(k, v []byte) error {
				var rec onlineRecord
				if err := json.Unmarshal(v, &rec); err != nil {
					return fmt.Errorf("entity %s: online key %q: %w", name, k, err)
				}
				if sn.supersedes(rec) {
					superseded = append(superseded, slices.Clone(k))
					return nil
				}
				e.online[string(k)] = e.merge(sn, string(k), rec)
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range superseded {
				if err := ob.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// loadSnapshot reads the entity's serving snapshot from the file; nil when
// it has none.
func (e *entity) loadSnapshot(tx *bolt.Tx) (*snapshot, error) {
	name := e.spec.Name
	raw := tx.Bucket(bMeta).Get([]byte(name))
	if raw == nil {
		return nil, nil
	}
	var m Meta
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("entity %s: meta: %w", name, err)
	}
	b := tx.Bucket(bSnap).Bucket([]byte(name))
	if b != nil {
		b = b.Bucket(versionKey(m.Version))
	}
	if b == nil {
		return nil, fmt.Errorf("entity %s: snapshot version %d is missing", name, m.Version)
	}
	sn := &snapshot{Meta: m, index: make(map[string]int32, m.Rows)}
	err := b.ForEach(func(k, v []byte) error {
		nums, strs, err := e.decode(v)
		if err != nil {
			return fmt.Errorf("entity %s: key %q: %w", name, k, err)
		}
		sn.index[string(k)] = int32(len(sn.index))
		sn.nums = append(sn.nums, nums...)
		sn.strs = append(sn.strs, strs...)
		return nil
	})
	return sn, err
}

// supersedes reports whether the snapshot describes a time no earlier than
// the online write: then the snapshot's row serves, not the write.
func (sn *snapshot) supersedes(rec onlineRecord) bool {
	return sn != nil && !rec.EventTime.After(sn.AsOf)
}

func versionKey(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// encode is a row as stored: each number as 8 bytes, then each string with a
// uvarint length.
func (e *entity) encode(nums []float64, strs []string) []byte {
	out := make([]byte, 0, 8*len(nums)+8*len(strs))
	for _, v := range nums {
		out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
	}
	for _, v := range strs {
		out = binary.AppendUvarint(out, uint64(len(v)))
		out = append(out, v...)
	}
	return out
}

func (e *entity) decode(b []byte) ([]float64, []string, error) {
	if len(b) < 8*len(e.numeric) {
		return nil, nil, errors.New("row shorter than the spec's numeric features: the spec changed since this snapshot was loaded; load it again")
	}
	nums := make([]float64, len(e.numeric))
	for i := range nums {
		nums[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	b = b[8*len(e.numeric):]
	strs := make([]string, len(e.strs))
	for i := range strs {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, nil, errors.New("row does not match the spec's string features: the spec changed since this snapshot was loaded; load it again")
		}
		strs[i] = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	if len(b) != 0 {
		return nil, nil, errors.New("row longer than the spec's features: the spec changed since this snapshot was loaded; load it again")
	}
	return nums, strs, nil
}

// Swap makes rows the entity's serving snapshot, atomically: it is written
// whole, then made current in the same transaction that deletes the previous
// version, then served. Until Swap returns, the previous snapshot serves
// every request. asOf is the time the rows describe (zero: now); online
// writes with a later event time stay in force over the new snapshot, older
// ones are dropped.
func (s *Bolt) Swap(_ context.Context, rows *table.Rows, asOf time.Time, source string) (Meta, error) {
	e, err := s.ents.forRows(s.spec, rows)
	if err != nil {
		return Meta{}, err
	}
	s.load.Lock()
	defer s.load.Unlock()
	now := s.now()
	if asOf.IsZero() {
		asOf = now
	}
	m := Meta{Version: 1, Rows: rows.Len(), AsOf: asOf.UTC(), LoadedAt: now.UTC(), Source: source}
	prev := e.snap.Load()
	if prev != nil {
		m.Version, m.Previous = prev.Version+1, prev.Version
	}
	sn := &snapshot{Meta: m, index: make(map[string]int32, rows.Len()), nums: rows.Nums, strs: rows.Strs}
	for i, k := range rows.Keys {
		sn.index[k] = int32(i)
	}
	nn, ns := len(e.numeric), len(e.strs)
	err = s.db.Update(func(tx *bolt.Tx) error {
		eb, err := tx.Bucket(bSnap).CreateBucketIfNotExists([]byte(e.spec.Name))
		if err != nil {
			return err
		}
		vb, err := eb.CreateBucket(versionKey(m.Version))
		if err != nil {
			return err
		}
		vb.FillPercent = 0.9
		for i, k := range rows.Keys {
			if err := vb.Put([]byte(k), e.encode(rows.Nums[i*nn:(i+1)*nn], rows.Strs[i*ns:(i+1)*ns])); err != nil {
				return err
			}
		}
		// Earlier versions go in the same transaction.
		var old [][]byte
		_ = eb.ForEachBucket(func(k []byte) error {
			if binary.BigEndian.Uint64(k) != m.Version {
				old = append(old, k)
			}
			return nil
		})
		for _, k := range old {
			if err := eb.DeleteBucket(k); err != nil {
				return err
			}
		}
		raw, _ := json.Marshal(m)
		if err := tx.Bucket(bMeta).Put([]byte(e.spec.Name), raw); err != nil {
			return err
		}
		// Online writes the replaced snapshot superseded already are seen by
		// no view: they go. Those only the new one supersedes stay until
		// the next swap, for the views that hold the replaced one.
		ob := tx.Bucket(bOnline).Bucket([]byte(e.spec.Name))
		if ob == nil || prev == nil {
			return nil
		}
		e.mu.RLock()
		defer e.mu.RUnlock()
		for k, r := range e.online {
			if prev.supersedes(r.rec) {
				if err := ob.Delete([]byte(k)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return Meta{}, fmt.Errorf("entity %s: writing snapshot: %w", e.spec.Name, err)
	}
	e.mu.Lock()
	e.snap.Store(sn)
	for k, r := range e.online {
		switch {
		case prev.supersedes(r.rec):
			delete(e.online, k)
		case !sn.supersedes(r.rec):
			e.online[k] = e.merge(sn, k, r.rec) // over the new snapshot
		}
	}
	e.mu.Unlock()
	return m, nil
}

// merge lays a key's online writes over its snapshot row (or, for a key the
// snapshot lacks, over a row of missing values with the spec's defaults).
func (e *entity) merge(sn *snapshot, key string, rec onlineRecord) *onlineRow {
	r := &onlineRow{rec: rec, base: sn, nums: make([]float64, len(e.numeric)), strs: make([]string, len(e.strs))}
	if nums, strs, ok := sn.row(key, len(e.numeric), len(e.strs)); ok {
		copy(r.nums, nums)
		copy(r.strs, strs)
	} else {
		for i, f := range e.numeric {
			r.nums[i], _ = table.Numeric(f, false, 0)
		}
	}
	for i, f := range e.numeric {
		if v, ok := rec.Nums[f.Name]; ok {
			r.nums[i] = v
		}
		if slices.Contains(rec.Missing, f.Name) {
			r.nums[i] = math.NaN()
		}
	}
	for i, f := range e.strs {
		if v, ok := rec.Strs[f.Name]; ok {
			r.strs[i] = v
		}
	}
	return r
}

func (sn *snapshot) row(key string, nn, ns int) ([]float64, []string, bool) {
	if sn == nil {
		return nil, nil, false
	}
	i, ok := sn.index[key]
	if !ok {
		return nil, nil, false
	}
	return sn.nums[int(i)*nn : (int(i)+1)*nn], sn.strs[int(i)*ns : (int(i)+1)*ns], true
}

// boltView is the serving snapshots at one moment.
type boltView struct {
	s     *Bolt
	snaps map[string]*snapshot
}

// View implements Store.
func (s *Bolt) View(context.Context) (View, error) {
	v := boltView{s: s, snaps: make(map[string]*snapshot, len(s.ents))}
	for name, e := range s.ents {
		v.snaps[name] = e.snap.Load()
	}
	return v, nil
}

// Get implements View.
func (v boltView) Get(_ context.Context, entityName string, keys []string, rows []Row, found []bool) error {
	e, ok := v.s.ents[entityName]
	if !ok {
		clear(found[:len(keys)])
		return nil
	}
	sn := v.snaps[entityName]
	e.mu.RLock()
	defer e.mu.RUnlock()
	for i, key := range keys {
		if r, ok := e.online[key]; ok && !sn.supersedes(r.rec) {
			if r.base != sn { // merged over another version than this view's
				r = e.merge(sn, key, r.rec)
			}
			rows[i], found[i] = Row{Nums: r.nums, Strs: r.strs}, true
			continue
		}
		nums, strs, ok := sn.row(key, len(e.numeric), len(e.strs))
		rows[i], found[i] = Row{Nums: nums, Strs: strs}, ok
	}
	return nil
}

// Status implements Store.
func (s *Bolt) Status(context.Context) ([]Status, error) {
	var out []Status
	for _, es := range s.spec.Entities {
		e := s.ents[es.Name]
		st := Status{Entity: es.Name}
		if sn := e.snap.Load(); sn != nil {
			m := sn.Meta
			st.Snapshot = &m
		}
		e.mu.RLock()
		st.OnlineRows = len(e.online)
		e.mu.RUnlock()
		out = append(out, st)
	}
	return out, nil
}
