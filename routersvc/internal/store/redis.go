package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/adrank/adrank/routersvc/internal/stats"
)

// Redis is the Store for several router replicas. Every Apply runs as one
// Lua script, which Redis executes atomically.
type Redis struct {
	c      *redis.Client
	prefix string
}

// OpenRedis connects to addr (host:port) and checks it answers. Keys get
// prefix (e.g. "adrank:").
func OpenRedis(ctx context.Context, addr, prefix string) (*Redis, error) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	return &Redis{c: c, prefix: prefix}, nil
}

// Close implements Store.
func (s *Redis) Close() error { return s.c.Close() }

// applyScript mirrors Bolt.Apply. ARGV: prefix, op JSON.
var applyScript = redis.NewScript(`
local p = ARGV[1]
local op = cjson.decode(ARGV[2])
if op.once ~= "" then
  if not redis.call('SET', p .. 'once:' .. op.once, '1', 'NX', 'PX', op.once_ttl) then return 0 end
end
local vars = {'n', 'c', 'r', 'v', 'xn', 'xc', 'xr'}
for _, u in ipairs(op.units) do
  local uk = p .. 'unit:' .. u.g .. ':' .. u.u
  local raw = redis.call('HMGET', uk, unpack(vars))
  local created = redis.call('EXISTS', uk) == 0
  local old, new = {}, {}
  for i = 1, #vars do old[i] = tonumber(raw[i]) or 0 end
  local d = {u.n, u.c, u.r, u.v, 0, 0, 0}
  if created and u.x ~= '' then
    local h = redis.call('HMGET', p .. 'unit:' .. u.x .. ':' .. u.u, 'n', 'c', 'r')
    for i = 1, 3 do d[4 + i] = tonumber(h[i]) or 0 end
  end
  for i = 1, #vars do
    new[i] = old[i] + d[i]
    if d[i] ~= 0 then redis.call('HINCRBY', uk, vars[i], d[i]) end
  end
  if created then redis.call('HINCRBY', uk, 'n', 0) end
  local gk = p .. 'group:' .. u.g
  if created then redis.call('HINCRBY', gk, 'users', 1) end
  for i = 1, #vars do
    if d[i] ~= 0 then redis.call('HINCRBYFLOAT', gk, vars[i], d[i]) end
    for j = i, #vars do
      local dp = new[i] * new[j] - old[i] * old[j]
      if dp ~= 0 then
        local name = vars[i] .. vars[j]
        if i == j then name = vars[i] .. '2' end
        redis.call('HINCRBYFLOAT', gk, name, dp)
      end
    end
  end
end
for _, c in ipairs(op.counters) do
  redis.call('HINCRBYFLOAT', p .. 'counter:' .. c.k, c.f, c.d)
end
local function outcome(a, b)
  if a == 0 and b == 0 then return nil elseif a > b then return 'wins' elseif a < b then return 'losses' end
  return 'ties'
end
for _, d in ipairs(op.duels) do
  local dk = p .. 'duel:' .. d.k .. ':' .. d.u
  local a1 = redis.call('HINCRBY', dk, 'a', d.a)
  local b1 = redis.call('HINCRBY', dk, 'b', d.b)
  redis.call('PEXPIRE', dk, op.duel_ttl)
  local d0, d1 = (a1 - d.a) - (b1 - d.b), a1 - b1
  redis.call('HINCRBYFLOAT', p .. 'counter:' .. d.k, 'credit', d1 - d0)
  redis.call('HINCRBYFLOAT', p .. 'counter:' .. d.k, 'credit2', d1 * d1 - d0 * d0)
  local o0, o1 = outcome(a1 - d.a, b1 - d.b), outcome(a1, b1)
  if not o0 and o1 then redis.call('HINCRBYFLOAT', p .. 'counter:' .. d.k, 'credit_n', 1) end
  if o0 ~= o1 then
    if o0 then redis.call('HINCRBYFLOAT', p .. 'counter:' .. d.k, o0, -1) end
    redis.call('HINCRBYFLOAT', p .. 'counter:' .. d.k, o1, 1)
  end
end
for _, im in ipairs(op.imps) do
  redis.call('SET', p .. 'imp:' .. im.id, im.js, 'PX', op.imp_ttl)
end
if #op.logs > 0 then
  local t = redis.call('TIME')
  local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for _, e in ipairs(op.logs) do
    local k = p .. 'log:' .. e.s
    redis.call('XADD', k, 'MAXLEN', op.log_max, '*', 'd', e.d)
    redis.call('XTRIM', k, 'MINID', math.max(0, nowms - op.log_ttl))
    redis.call('PEXPIRE', k, op.log_ttl)
  end
end
for _, r in ipairs(op.results) do
  redis.call('SET', p .. 'result:' .. r.k, r.v, 'PX', op.result_ttl)
end
return 1
`)

type redisOp struct {
	Once     string        `json:"once"`
	OnceTTL  int64         `json:"once_ttl"`
	Units    []UnitIncr    `json:"units"`
	Counters []CounterIncr `json:"counters"`
	Duels    []DuelIncr    `json:"duels"`
	DuelTTL  int64         `json:"duel_ttl"`
	Imps     []redisImp    `json:"imps"`
	ImpTTL   int64         `json:"imp_ttl"`
	Results  []redisResult `json:"results"`
	ResTTL   int64         `json:"result_ttl"`
	Logs     []LogEntry    `json:"logs"` // data in base64
	LogMax   int           `json:"log_max"`
	LogTTL   int64         `json:"log_ttl"`
}

// redisResult is a precomputed answer: its value is the time it was put
// (16 hex digits of Unix nanoseconds), then the answer (text).
type redisResult struct {
	K string `json:"k"`
	V string `json:"v"`
}

func stamped(at time.Time, v []byte) string {
	return fmt.Sprintf("%016x", uint64(at.UnixNano())) + string(v)
}

type redisImp struct {
	ID string `json:"id"`
	JS string `json:"js"`
}

// nonNil keeps empty lists arrays in JSON, as the script iterates them.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ApplyAll implements Store: each op one script (all of it or, when its
// Once was seen, none of it), in order, in one pipeline: one round trip.
func (s *Redis) ApplyAll(ctx context.Context, ops []Op) ([]bool, error) {
	args := make([][]byte, len(ops))
	for i, op := range ops {
		var err error
		if args[i], err = redisArg(op); err != nil {
			return nil, err
		}
	}
	run := func() ([]redis.Cmder, error) {
		return s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, a := range args {
				applyScript.EvalSha(ctx, p, nil, s.prefix, a)
			}
			return nil
		})
	}
	cmds, err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = applyScript.Load(ctx, s.c).Err(); err == nil {
			cmds, err = run()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("redis apply: %w", err)
	}
	applied := make([]bool, len(ops))
	for i, c := range cmds {
		n, err := c.(*redis.Cmd).Int()
		if err != nil {
			return nil, fmt.Errorf("redis apply: %w", err)
		}
		applied[i] = n == 1
	}
	return applied, nil
}

// Apply implements Store: one script, so all of it or, when Once was seen,
// none of it (its Results too).
func (s *Redis) Apply(ctx context.Context, op Op) (bool, error) {
	arg, err := redisArg(op)
	if err != nil {
		return false, err
	}
	n, err := applyScript.Run(ctx, s.c, nil, s.prefix, arg).Int()
	if err != nil {
		return false, fmt.Errorf("redis apply: %w", err)
	}
	return n == 1, nil
}

// redisArg is op as the apply script's argument.
func redisArg(op Op) ([]byte, error) {
	ro := redisOp{
		Once: op.Once, OnceTTL: max(op.OnceTTL.Milliseconds(), 1),
		Units: nonNil(op.Units), Counters: nonNil(op.Counters), Duels: nonNil(op.Duels),
		DuelTTL: max(op.DuelTTL.Milliseconds(), 1), ImpTTL: max(op.ImpressionTTL.Milliseconds(), 1),
		Imps:    make([]redisImp, 0, len(op.Impressions)),
		Results: make([]redisResult, 0, len(op.Results)), ResTTL: max(op.ResultTTL.Milliseconds(), 1),
		Logs: nonNil(op.Logs), LogMax: op.LogMax, LogTTL: max(op.LogTTL.Milliseconds(), 1),
	}
	if ro.LogMax <= 0 {
		ro.LogMax = DefaultLogMax
	}
	now := time.Now()
	for k, v := range op.Results {
		ro.Results = append(ro.Results, redisResult{K: k, V: stamped(now, v)})
	}
	for _, im := range op.Impressions {
		js, err := json.Marshal(im)
		if err != nil {
			return nil, err
		}
		ro.Imps = append(ro.Imps, redisImp{ID: im.ID, JS: string(js)})
	}
	return json.Marshal(ro)
}

// Impression implements Store.
func (s *Redis) Impression(ctx context.Context, id string) (Impression, error) {
	var im Impression
	js, err := s.c.Get(ctx, s.prefix+"imp:"+id).Bytes()
	if errors.Is(err, redis.Nil) {
		return im, ErrNotFound
	}
	if err != nil {
		return im, err
	}
	return im, json.Unmarshal(js, &im)
}

// Counters implements Store.
func (s *Redis) Counters(ctx context.Context, key string) (map[string]float64, error) {
	raw, err := s.c.HGetAll(ctx, s.prefix+"counter:"+key).Result()
	if err != nil {
		return nil, err
	}
	return floats(raw)
}

func floats(raw map[string]string) (map[string]float64, error) {
	m := make(map[string]float64, len(raw))
	for k, v := range raw {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", k, err)
		}
		m[k] = f
	}
	return m, nil
}

// Group implements Store.
func (s *Redis) Group(ctx context.Context, group string) (stats.Sums, error) {
	raw, err := s.c.HGetAll(ctx, s.prefix+"group:"+group).Result()
	if err != nil {
		return stats.Sums{}, err
	}
	m, err := floats(raw)
	if err != nil {
		return stats.Sums{}, err
	}
	return stats.SumsFromFields(m), nil
}

// ReadLog implements Store.
func (s *Redis) ReadLog(ctx context.Context, stream string, fn func(data []byte) error) error {
	start := "-"
	for {
		msgs, err := s.c.XRangeN(ctx, s.prefix+"log:"+stream, start, "+", 500).Result()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			d, _ := m.Values["d"].(string)
			data, err := base64.StdEncoding.DecodeString(d)
			if err != nil {
				return fmt.Errorf("log %s entry %s: %w", stream, m.ID, err)
			}
			if err := fn(data); err != nil {
				return err
			}
		}
		if len(msgs) < 500 {
			return nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := s.c.Get(ctx, s.prefix+"kv:"+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	return v, err
}

var casScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
`)

// CompareAndSwap implements Store.
func (s *Redis) CompareAndSwap(ctx context.Context, key string, old, new []byte) (bool, error) {
	absent := "0"
	if old == nil {
		absent = "1"
	}
	n, err := casScript.Run(ctx, s.c, []string{s.prefix + "kv:" + key}, absent, old, new).Int()
	return n == 1, err
}

// Result implements Store.
func (s *Redis) Result(ctx context.Context, key string) ([]byte, time.Time, error) {
	v, err := s.c.Get(ctx, s.prefix+"result:"+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, time.Time{}, ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	at, perr := strconv.ParseUint(string(v[:min(16, len(v))]), 16, 64)
	if len(v) < 16 || perr != nil {
		return nil, time.Time{}, ErrNotFound
	}
	return v[16:], time.Unix(0, int64(at)), nil
}
