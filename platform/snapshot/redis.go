package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the store for several machines: the shards of one generation can
// run anywhere, and every router reads the same generations. Keys, under
// adrank:snap:DOMAIN:
//
//	meta:GEN          the generation's meta (SETNX: the first Begin wins)
//	progress:GEN:I    shard I's checkpoint (a commit WATCHes it)
//	topk:GEN          user -> top K, all shards
//	ads:GEN:I         ad -> stats, shard I's
//	complete          GEN -> the generation, once every shard finished
//	gens              GEN by creation time, complete ones only
type Redis struct {
	c *redis.Client
}

// OpenRedis connects to the Redis at addr, database db.
func OpenRedis(ctx context.Context, addr string, db int) (*Redis, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("snapshot store: redis %s: %w", addr, err)
	}
	return &Redis{c: c}, nil
}

func rkey(domain string, parts ...string) string {
	k := "adrank:snap:" + domain
	for _, p := range parts {
		k += ":" + p
	}
	return k
}

// Close implements Store.
func (r *Redis) Close() error { return r.c.Close() }

// Begin implements Store.
func (r *Redis) Begin(ctx context.Context, m Meta, shard int) (Shard, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	if shard < 0 || shard >= m.Shards {
		return nil, fmt.Errorf("shard %d is outside 0..%d", shard, m.Shards-1)
	}
	m.Created = time.Now().UTC()
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	metaKey := rkey(m.Domain, "meta", m.Generation)
	if err := r.c.SetNX(ctx, metaKey, b, 0).Err(); err != nil {
		return nil, err
	}
	raw, err := r.c.Get(ctx, metaKey).Bytes()
	if err != nil {
		return nil, err
	}
	var got Meta
	if err := json.Unmarshal(raw, &got); err != nil {
		return nil, err
	}
	if !got.same(m) {
		return nil, fmt.Errorf("%w: %+v, not %+v", ErrConflict, got, m)
	}
	s := &redisShard{r: r, m: got, i: shard, key: rkey(m.Domain, "progress", m.Generation, strconv.Itoa(shard))}
	if s.p, err = r.progress(ctx, s.key); err != nil {
		return nil, err
	}
	return s, nil
}

func (r *Redis) progress(ctx context.Context, key string) (Progress, error) {
	var p Progress
	raw, err := r.c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return p, nil
	}
	if err == nil {
		err = json.Unmarshal(raw, &p)
	}
	return p, err
}

// Generations implements Store.
func (r *Redis) Generations(ctx context.Context, domain string) ([]Generation, error) {
	ids, err := r.c.ZRevRange(ctx, rkey(domain, "gens"), 0, -1).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	raw, err := r.c.HMGet(ctx, rkey(domain, "complete"), ids...).Result()
	if err != nil {
		return nil, err
	}
	var out []Generation
	for i, v := range raw {
		s, ok := v.(string)
		if !ok {
			continue // pruned meanwhile
		}
		var g Generation
		if err := json.Unmarshal([]byte(s), &g); err != nil {
			return nil, fmt.Errorf("generation %s: %w", ids[i], err)
		}
		out = append(out, g)
	}
	return out, nil
}

// Latest implements Store.
func (r *Redis) Latest(ctx context.Context, domain string) (Generation, bool, error) {
	ids, err := r.c.ZRevRange(ctx, rkey(domain, "gens"), 0, 0).Result()
	if err != nil || len(ids) == 0 {
		return Generation{}, false, err
	}
	raw, err := r.c.HGet(ctx, rkey(domain, "complete"), ids[0]).Bytes()
	if errors.Is(err, redis.Nil) {
		return Generation{}, false, nil
	}
	if err != nil {
		return Generation{}, false, err
	}
	var g Generation
	return g, true, json.Unmarshal(raw, &g)
}

// Lookup implements Store.
func (r *Redis) Lookup(ctx context.Context, g Generation, user string) ([]Entry, bool, error) {
	raw, err := r.c.HGet(ctx, rkey(g.Domain, "topk", g.Generation), user).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	es, err := decode(raw)
	return es, err == nil, err
}

// Ads implements Store.
func (r *Redis) Ads(ctx context.Context, g Generation) (map[string]AdStat, error) {
	out := map[string]AdStat{}
	for i := range g.Shards {
		raw, err := r.c.HGetAll(ctx, rkey(g.Domain, "ads", g.Generation, strconv.Itoa(i))).Result()
		if err != nil {
			return nil, err
		}
		for id, v := range raw {
			s, err := decodeStat([]byte(v))
			if err != nil {
				return nil, err
			}
			t := out[id]
			out[id] = AdStat{Sum: t.Sum + s.Sum, N: t.N + s.N}
		}
	}
	return out, nil
}

// keys are every key of one generation.
func (r *Redis) keys(domain, gen string, shards int) []string {
	ks := []string{rkey(domain, "meta", gen), rkey(domain, "topk", gen)}
	for i := range shards {
		ks = append(ks, rkey(domain, "progress", gen, strconv.Itoa(i)), rkey(domain, "ads", gen, strconv.Itoa(i)))
	}
	return ks
}

// prune removes all but the newest keep complete generations of domain, and
// unfinished ones begun before the oldest kept.
func (r *Redis) prune(ctx context.Context, domain string, keep int) error {
	gs, err := r.Generations(ctx, domain)
	if err != nil || len(gs) <= keep {
		return err
	}
	for _, g := range gs[keep:] {
		// Unlisted first, so a reader never sees half a generation.
		_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.ZRem(ctx, rkey(domain, "gens"), g.Generation)
			p.HDel(ctx, rkey(domain, "complete"), g.Generation)
			return nil
		})
		if err == nil {
			err = r.c.Unlink(ctx, r.keys(domain, g.Generation, g.Shards)...).Err()
		}
		if err != nil {
			return err
		}
	}
	oldest := gs[keep-1].Created
	var cursor uint64
	for {
		ks, next, err := r.c.Scan(ctx, cursor, rkey(domain, "meta", "*"), 100).Result()
		if err != nil {
			return err
		}
		for _, k := range ks {
			var m Meta
			raw, err := r.c.Get(ctx, k).Bytes()
			if err != nil || json.Unmarshal(raw, &m) != nil || !m.Created.Before(oldest) {
				continue
			}
			if ok, _ := r.c.HExists(ctx, rkey(domain, "complete"), m.Generation).Result(); ok {
				continue
			}
			if err := r.c.Unlink(ctx, r.keys(domain, m.Generation, m.Shards)...).Err(); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

type redisShard struct {
	r   *Redis
	m   Meta
	i   int
	key string // progress
	p   Progress
}

func (s *redisShard) Meta() Meta         { return s.m }
func (s *redisShard) Progress() Progress { return s.p }

func (s *redisShard) Existing(ctx context.Context, users []string) (map[string][]Entry, error) {
	out := map[string][]Entry{}
	if len(users) == 0 {
		return out, nil
	}
	raw, err := s.r.c.HMGet(ctx, rkey(s.m.Domain, "topk", s.m.Generation), users...).Result()
	if err != nil {
		return nil, err
	}
	for i, v := range raw {
		if str, ok := v.(string); ok {
			es, err := decode([]byte(str))
			if err != nil {
				return nil, err
			}
			out[users[i]] = es
		}
	}
	return out, nil
}

// Commit writes the chunk in one MULTI/EXEC, WATCHing the checkpoint: a
// writer that is not the last to have committed is fenced off.
func (s *redisShard) Commit(ctx context.Context, c Chunk) error {
	if s.p.Done {
		return fmt.Errorf("shard %d of %s is finished", s.i, s.m.Generation)
	}
	adsKey := rkey(s.m.Domain, "ads", s.m.Generation, strconv.Itoa(s.i))
	next, err := json.Marshal(c.Progress)
	if err != nil {
		return err
	}
	err = s.r.c.Watch(ctx, func(tx *redis.Tx) error {
		cur, err := s.r.progressTx(ctx, tx, s.key)
		if err != nil {
			return err
		}
		if cur != s.p {
			return ErrFenced
		}
		ids := make([]string, 0, len(c.Ads))
		for id := range c.Ads {
			ids = append(ids, id)
		}
		var old []any
		if len(ids) > 0 {
			if old, err = tx.HMGet(ctx, adsKey, ids...).Result(); err != nil {
				return err
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if len(c.Users) > 0 {
				vals := make([]any, 0, 2*len(c.Users))
				for u, es := range c.Users {
					vals = append(vals, u, encode(es))
				}
				p.HSet(ctx, rkey(s.m.Domain, "topk", s.m.Generation), vals...)
			}
			if len(ids) > 0 {
				vals := make([]any, 0, 2*len(ids))
				for j, id := range ids {
					st := c.Ads[id]
					if str, ok := old[j].(string); ok {
						o, err := decodeStat([]byte(str))
						if err != nil {
							return err
						}
						st = AdStat{Sum: st.Sum + o.Sum, N: st.N + o.N}
					}
					vals = append(vals, id, encodeStat(st))
				}
				p.HSet(ctx, adsKey, vals...)
			}
			p.Set(ctx, s.key, next, 0)
			return nil
		})
		return err
	}, s.key)
	if errors.Is(err, redis.TxFailedErr) {
		err = ErrFenced
	}
	if err == nil {
		s.p = c.Progress
	}
	return err
}

func (r *Redis) progressTx(ctx context.Context, tx *redis.Tx, key string) (Progress, error) {
	var p Progress
	raw, err := tx.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return p, nil
	}
	if err == nil {
		err = json.Unmarshal(raw, &p)
	}
	return p, err
}

func (s *redisShard) Finish(ctx context.Context, keep int) (Generation, bool, error) {
	if keep < 1 {
		keep = DefaultKeep
	}
	if !s.p.Done {
		done := s.p
		done.Done = true
		if err := s.Commit(ctx, Chunk{Progress: done}); err != nil {
			return Generation{}, false, err
		}
	}
	// Every shard marks itself done before reading the others, so the last
	// to finish sees them all.
	ps := make([]Progress, s.m.Shards)
	for i := range ps {
		p, err := s.r.progress(ctx, rkey(s.m.Domain, "progress", s.m.Generation, strconv.Itoa(i)))
		if err != nil {
			return Generation{}, false, err
		}
		if !p.Done {
			return total(s.m, ps), false, nil
		}
		ps[i] = p
	}
	completeKey := rkey(s.m.Domain, "complete")
	if raw, err := s.r.c.HGet(ctx, completeKey, s.m.Generation).Bytes(); err == nil {
		var g Generation
		return g, true, json.Unmarshal(raw, &g)
	}
	g := total(s.m, ps)
	g.Completed = time.Now().UTC()
	b, err := json.Marshal(g)
	if err != nil {
		return Generation{}, false, err
	}
	_, err = s.r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, completeKey, s.m.Generation, b)
		p.ZAdd(ctx, rkey(s.m.Domain, "gens"), redis.Z{Score: float64(g.Created.UnixMicro()), Member: s.m.Generation})
		return nil
	})
	if err != nil {
		return Generation{}, false, err
	}
	return g, true, s.r.prune(ctx, s.m.Domain, keep)
}

func (s *redisShard) Close() error { return nil }
