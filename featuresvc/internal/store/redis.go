package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/adrank/adrank/featuresvc/internal/table"
	"github.com/adrank/adrank/ml/featurespec"
)

// Redis is the feature store in Redis, shared by several featuresvc
// replicas. Keys, under a prefix:
//
//	meta:<entity>          the serving snapshot's Meta (JSON)
//	snap:<entity>:<ver>    hash: key -> row (the same encoding as Bolt's)
//	online:<entity>        hash: key -> online record (JSON)
//	version:<entity>       the last version number handed out
//
// A snapshot is written under its own version, with an expiry while it is
// written (a load that dies leaves nothing for long), then made current by
// replacing meta; the version it replaced expires RetiredTTL later, so
// readers that captured it finish with it. Online writes are read, merged and
// written under WATCH, so concurrent writers from any replica never lose
// one another's writes.
type Redis struct {
	spec   *featurespec.Spec
	c      *redis.Client
	prefix string
	now    func() time.Time
	ents   entities // spec and encoding only; rows stay in Redis
	load   sync.Mutex
}

var _ Store = (*Redis)(nil)
var _ Store = (*Bolt)(nil)

// loadingTTL bounds how long a snapshot being written lives before it is
// made current.
const loadingTTL = time.Hour

// RetiredTTL is how long a replaced snapshot stays readable: a view taken
// before the swap reads the version it captured for at least this long.
const RetiredTTL = time.Minute

// putTries bounds the optimistic retries of an online write.
const putTries = 50

// OpenRedis connects to the Redis at addr.
func OpenRedis(ctx context.Context, addr, prefix string, spec *featurespec.Spec, now func() time.Time) (*Redis, error) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	s := &Redis{spec: spec, c: c, prefix: prefix, now: now, ents: newEntities(spec)}
	return s, nil
}

// Close implements Store.
func (s *Redis) Close() error { return s.c.Close() }

// Spec implements Store.
func (s *Redis) Spec() *featurespec.Spec { return s.spec }

func (s *Redis) key(parts ...string) string {
	k := s.prefix
	for i, p := range parts {
		if i > 0 {
			k += ":"
		}
		k += p
	}
	return k
}

func (s *Redis) snapKey(entity string, v uint64) string {
	return s.key("snap", entity, strconv.FormatUint(v, 10))
}

// metas reads every entity's serving Meta (nil: none yet), in one call.
func (s *Redis) metas(ctx context.Context) (map[string]*Meta, error) {
	keys := make([]string, len(s.spec.Entities))
	for i, e := range s.spec.Entities {
		keys[i] = s.key("meta", e.Name)
	}
	vals, err := s.c.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]*Meta{}
	for i, e := range s.spec.Entities {
		str, ok := vals[i].(string)
		if !ok {
			continue
		}
		var m Meta
		if err := json.Unmarshal([]byte(str), &m); err != nil {
			return nil, fmt.Errorf("entity %s: meta: %w", e.Name, err)
		}
		out[e.Name] = &m
	}
	return out, nil
}

// Swap implements Store.
func (s *Redis) Swap(ctx context.Context, rows *table.Rows, asOf time.Time, source string) (Meta, error) {
	e, err := s.ents.forRows(s.spec, rows)
	if err != nil {
		return Meta{}, err
	}
	s.load.Lock() // this replica's loads one at a time; versions are unique across replicas
	defer s.load.Unlock()
	now := s.now()
	if asOf.IsZero() {
		asOf = now
	}
	v, err := s.c.Incr(ctx, s.key("version", e.spec.Name)).Uint64()
	if err != nil {
		return Meta{}, err
	}
	m := Meta{Version: v, Rows: rows.Len(), AsOf: asOf.UTC(), LoadedAt: now.UTC(), Source: source}
	sk := s.snapKey(e.spec.Name, v)
	nn, ns := len(e.numeric), len(e.strs)
	const chunk = 2000
	for lo := 0; lo < rows.Len(); lo += chunk {
		hi := min(lo+chunk, rows.Len())
		args := make([]any, 0, 2*(hi-lo))
		for i := lo; i < hi; i++ {
			args = append(args, rows.Keys[i], e.encode(rows.Nums[i*nn:(i+1)*nn], rows.Strs[i*ns:(i+1)*ns]))
		}
		p := s.c.Pipeline()
		p.HSet(ctx, sk, args...)
		p.Expire(ctx, sk, loadingTTL)
		if _, err := p.Exec(ctx); err != nil {
			return Meta{}, fmt.Errorf("entity %s: writing snapshot: %w", e.spec.Name, err)
		}
	}
	// Make it current: the version it replaces stays for readers holding
	// it; the one before that goes.
	mk := s.key("meta", e.spec.Name)
	var prev *Meta // the snapshot this one replaced
	err = s.c.Watch(ctx, func(tx *redis.Tx) error {
		var old *Meta
		if raw, err := tx.Get(ctx, mk).Result(); err == nil {
			old = &Meta{}
			if err := json.Unmarshal([]byte(raw), old); err != nil {
				return err
			}
		} else if !errors.Is(err, redis.Nil) {
			return err
		}
		if old != nil && old.Version > m.Version {
			return fmt.Errorf("%w: version %d was made current while version %d was written", ErrNewerSnapshot, old.Version, m.Version)
		}
		if old != nil {
			m.Previous = old.Version
		}
		prev = old
		raw, _ := json.Marshal(m)
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, mk, raw, 0)
			p.Persist(ctx, sk)
			if old != nil { // readers that captured it finish with it
				p.Expire(ctx, s.snapKey(e.spec.Name, old.Version), RetiredTTL)
			}
			return nil
		})
		return err
	}, mk)
	if err != nil {
		return Meta{}, fmt.Errorf("entity %s: making the snapshot current: %w", e.spec.Name, err)
	}
	// Online writes the replaced snapshot superseded already are seen by no
	// view: they go (only if still as read). Those only the new one
	// supersedes stay until the next swap, for views of the replaced one.
	if prev == nil {
		return m, nil
	}
	ok := s.key("online", e.spec.Name)
	recs, err := s.c.HGetAll(ctx, ok).Result()
	if err != nil {
		return m, fmt.Errorf("entity %s: reading online rows: %w", e.spec.Name, err)
	}
	for k, raw := range recs {
		var rec onlineRecord
		if json.Unmarshal([]byte(raw), &rec) != nil || rec.EventTime.After(prev.AsOf) {
			continue
		}
		if err := delIfSame.Run(ctx, s.c, []string{ok}, k, raw).Err(); err != nil {
			return m, fmt.Errorf("entity %s: dropping superseded online rows: %w", e.spec.Name, err)
		}
	}
	return m, nil
}

// ErrNewerSnapshot is a load that lost to a newer one loaded at the same
// time (through another replica): the newer one serves.
var ErrNewerSnapshot = errors.New("a newer snapshot was loaded meanwhile")

// delIfSame deletes a hash field if it still holds the value read.
var delIfSame = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0`)

// redisView holds the versions serving when it was made.
type redisView struct {
	s     *Redis
	metas map[string]*Meta
}

// View implements Store.
func (s *Redis) View(ctx context.Context) (View, error) {
	m, err := s.metas(ctx)
	if err != nil {
		return nil, err
	}
	return redisView{s: s, metas: m}, nil
}

// Get implements View: the snapshot rows and the online records in one
// round trip.
func (v redisView) Get(ctx context.Context, entityName string, keys []string, rows []Row, found []bool) error {
	clear(found[:len(keys)])
	e, ok := v.s.ents[entityName]
	if !ok || len(keys) == 0 {
		return nil
	}
	p := v.s.c.Pipeline()
	var snap *redis.SliceCmd
	m := v.metas[entityName]
	if m != nil {
		snap = p.HMGet(ctx, v.s.snapKey(entityName, m.Version), keys...)
	}
	online := p.HMGet(ctx, v.s.key("online", entityName), keys...)
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	for i, k := range keys {
		var base *snapshot
		if snap != nil {
			if raw, ok := snap.Val()[i].(string); ok {
				nums, strs, err := e.decode([]byte(raw))
				if err != nil {
					return fmt.Errorf("entity %s: key %q: %w", entityName, k, err)
				}
				base = &snapshot{index: map[string]int32{k: 0}, nums: nums, strs: strs}
				rows[i], found[i] = Row{Nums: nums, Strs: strs}, true
			}
		}
		if raw, ok := online.Val()[i].(string); ok {
			var rec onlineRecord
			if err := json.Unmarshal([]byte(raw), &rec); err != nil {
				return fmt.Errorf("entity %s: online key %q: %w", entityName, k, err)
			}
			if m != nil && !rec.EventTime.After(m.AsOf) {
				continue // superseded by the snapshot, not yet deleted
			}
			r := e.merge(base, k, rec)
			rows[i], found[i] = Row{Nums: r.nums, Strs: r.strs}, true
		}
	}
	return nil
}

// Put implements Store.
func (s *Redis) Put(ctx context.Context, entityName string, ups []Update) error {
	now := s.now()
	e, keys, err := s.ents.forUpdates(s.spec, entityName, ups, now)
	if err != nil {
		return err
	}
	ok, mk := s.key("online", e.spec.Name), s.key("meta", e.spec.Name)
	distinct := uniq(keys)
	for range putTries {
		err := s.c.Watch(ctx, func(tx *redis.Tx) error {
			var asOf time.Time
			if raw, err := tx.Get(ctx, mk).Result(); err == nil {
				var m Meta
				if err := json.Unmarshal([]byte(raw), &m); err != nil {
					return err
				}
				asOf = m.AsOf
			} else if !errors.Is(err, redis.Nil) {
				return err
			}
			vals, err := tx.HMGet(ctx, ok, distinct...).Result()
			if err != nil {
				return err
			}
			prev := map[string]onlineRecord{}
			for i, k := range distinct {
				if raw, isStr := vals[i].(string); isStr {
					var rec onlineRecord
					if json.Unmarshal([]byte(raw), &rec) == nil && (asOf.IsZero() || rec.EventTime.After(asOf)) {
						prev[k] = rec
					}
				}
			}
			next := applyUpdates(ups, keys, asOf, now, func(k string) (onlineRecord, bool) { r, ok := prev[k]; return r, ok })
			if len(next) == 0 {
				return nil
			}
			added := 0
			for k := range next {
				if _, ok := prev[k]; !ok {
					added++
				}
			}
			held, err := tx.HLen(ctx, ok).Result()
			if err != nil {
				return err
			}
			if int(held)+added > MaxOnlineRows {
				return fmt.Errorf("%w: entity %s holds %d online rows, at most %d: load a snapshot that includes them", ErrFull, e.spec.Name, held, MaxOnlineRows)
			}
			args := make([]any, 0, 2*len(next))
			for k, rec := range next {
				raw, err := json.Marshal(rec)
				if err != nil {
					return err
				}
				args = append(args, k, raw)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, ok, args...)
				return nil
			})
			return err
		}, ok, mk)
		if !errors.Is(err, redis.TxFailedErr) {
			if err != nil && !errors.Is(err, ErrFull) {
				return fmt.Errorf("entity %s: writing online rows: %w", e.spec.Name, err)
			}
			return err
		}
	}
	return fmt.Errorf("entity %s: writing online rows: %d conflicting writers in a row; try again", e.spec.Name, putTries)
}

func uniq(keys []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// Status implements Store.
func (s *Redis) Status(ctx context.Context) ([]Status, error) {
	metas, err := s.metas(ctx)
	if err != nil {
		return nil, err
	}
	p := s.c.Pipeline()
	lens := make([]*redis.IntCmd, len(s.spec.Entities))
	for i, e := range s.spec.Entities {
		lens[i] = p.HLen(ctx, s.key("online", e.Name))
	}
	if _, err := p.Exec(ctx); err != nil {
		return nil, err
	}
	var out []Status
	for i, e := range s.spec.Entities {
		out = append(out, Status{Entity: e.Name, Snapshot: metas[e.Name], OnlineRows: int(lens[i].Val())})
	}
	return out, nil
}
