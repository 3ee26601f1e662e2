// Package snapshot stores batch predictions: each user's top K ads with their
// pCTRs for one domain, computed offline by one model version and written as
// numbered generations.
//
// A generation is written by N shards (hash ranges of users) that may run
// on N machines. Each shard commits its progress in chunks, each chunk
// atomically with its checkpoint, so a killed shard resumes where its last
// commit ended. A generation becomes visible, atomically and all at once,
// when its last shard finishes; until then readers see the previous one.
// The newest Keep generations are kept.
//
// Two stores implement it: Dir (bbolt files in a directory; one machine,
// several processes) and Redis (several machines and routers).
package snapshot

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/adrank/adrank/platform/names"
)

// Meta describes a generation; all its shards agree on it.
type Meta struct {
	Domain      string `json:"domain"`
	Generation  string `json:"generation"`
	Version     string `json:"version"`
	ModelSHA256 string `json:"model_sha256"`
	Shards      int    `json:"shards"`
	K           int    `json:"k"`
	// Created is set by the first shard to begin; later ones keep it.
	Created time.Time `json:"created"`
}

// same reports whether two metas describe the same generation (Created
// aside).
func (m Meta) same(o Meta) bool {
	m.Created, o.Created = time.Time{}, time.Time{}
	return m == o
}

// Check checks m's fields.
func (m Meta) Check() error {
	switch {
	case !names.Valid(m.Domain):
		return fmt.Errorf("domain %q is not a valid name", m.Domain)
	case !names.Valid(m.Generation):
		return fmt.Errorf("generation %q is not a valid name (%s)", m.Generation, names.Pattern)
	case !names.Valid(m.Version):
		return fmt.Errorf("version %q is not a valid name", m.Version)
	case m.Shards < 1 || m.Shards > MaxShards:
		return fmt.Errorf("shards: %d is outside 1..%d", m.Shards, MaxShards)
	case m.K < 1 || m.K > MaxK:
		return fmt.Errorf("k: %d is outside 1..%d", m.K, MaxK)
	}
	return nil
}

// Bounds.
const (
	MaxShards = 1024
	MaxK      = 1000
	// DefaultKeep is how many complete generations are kept.
	DefaultKeep = 3
)

// Entry is one ad of a user's top K.
type Entry struct {
	AdID string
	Pctr float64
}

// AdStat sums an ad's pCTRs over the users it was scored for: the prior of
// a user the snapshot lacks.
type AdStat struct {
	Sum float64
	N   int64
}

// Mean is the ad's mean pCTR (0 when never scored).
func (s AdStat) Mean() float64 {
	if s.N == 0 {
		return 0
	}
	return s.Sum / float64(s.N)
}

// Progress is a shard's checkpoint: where its input resumes and what it has
// committed so far.
type Progress struct {
	Pos   int64 `json:"pos"`   // input position to resume from
	Pairs int64 `json:"pairs"` // pairs scored and committed
	Bad   int64 `json:"bad"`   // input rows rejected
	Users int64 `json:"users"` // users with a committed top K
	Done  bool  `json:"done"`
}

// Chunk is one commit: the full top K of some users (replacing what was
// there), additions to ad stats, and the progress after it.
type Chunk struct {
	Users    map[string][]Entry
	Ads      map[string]AdStat
	Progress Progress
}

// Generation is a complete, visible generation.
type Generation struct {
	Meta
	Completed time.Time `json:"completed"`
	Users     int64     `json:"users"`
	Pairs     int64     `json:"pairs"`
	Bad       int64     `json:"bad"`
}

// Age is how old g's predictions are at now.
func (g Generation) Age(now time.Time) time.Duration { return now.Sub(g.Created) }

// Store holds generations.
type Store interface {
	// Begin starts or resumes shard i of the generation m describes. A
	// generation begun before with another version, model, K or shard
	// count is refused (ErrConflict).
	Begin(ctx context.Context, m Meta, shard int) (Shard, error)
	// Latest is the domain's newest complete generation; false when none.
	Latest(ctx context.Context, domain string) (Generation, bool, error)
	// Generations lists the domain's complete generations, newest first.
	Generations(ctx context.Context, domain string) ([]Generation, error)
	// Lookup returns user's top K in g, best first; false when g has none.
	Lookup(ctx context.Context, g Generation, user string) ([]Entry, bool, error)
	// Ads returns g's ad stats, summed over shards.
	Ads(ctx context.Context, g Generation) (map[string]AdStat, error)
	Close() error
}

// Shard writes one shard of a generation. It is not safe for concurrent
// use; one process writes a shard at a time (a second writer is fenced
// off: its commits fail with ErrFenced).
type Shard interface {
	// Meta is the generation's agreed meta (Created from the first Begin).
	Meta() Meta
	// Progress is the shard's checkpoint.
	Progress() Progress
	// Existing returns the committed top K of those users that have one.
	Existing(ctx context.Context, users []string) (map[string][]Entry, error)
	// Commit writes c atomically: all of it, or nothing.
	Commit(ctx context.Context, c Chunk) error
	// Finish marks the shard done; when every shard is, it publishes the
	// generation (visible at once) and prunes all but the newest keep.
	// It returns the generation and whether it is complete.
	Finish(ctx context.Context, keep int) (Generation, bool, error)
	Close() error
}

var (
	// ErrConflict: the generation exists with another meta.
	ErrConflict = errors.New("generation exists with another meta")
	// ErrFenced: another writer committed to the shard since this one read
	// its checkpoint.
	ErrFenced = errors.New("shard written by another writer")
)

// ShardOf is the shard of user among n: its hash range. Shard i holds the
// users whose hash h has floor(h*n / 2^64) = i, where h is the 64-bit
// FNV-1a hash of the ID through SplitMix64's finalizer (FNV's high bits
// alone split similar IDs unevenly).
func ShardOf(user string, n int) int {
	f := fnv.New64a()
	f.Write([]byte(user))
	h := f.Sum64()
	h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
	h = (h ^ h>>27) * 0x94d049bb133111eb
	h ^= h >> 31
	hi, _ := bits.Mul64(h, uint64(n))
	return int(hi)
}

// Merge returns the best k of a and b (each best first), one entry per ad
// (the higher pCTR wins), best first; ties go to the smaller ad ID, so the
// result does not depend on the order pairs came in.
func Merge(a, b []Entry, k int) []Entry {
	out := make([]Entry, 0, min(k, len(a)+len(b)))
	out = append(out, a...)
	out = append(out, b...)
	Sort(out)
	seen := make(map[string]bool, len(out))
	kept := out[:0]
	for _, e := range out {
		if !seen[e.AdID] && len(kept) < k {
			seen[e.AdID] = true
			kept = append(kept, e)
		}
	}
	return kept
}

// Sort orders entries best first (ties: smaller ad ID first).
func Sort(es []Entry) {
	slices.SortFunc(es, func(x, y Entry) int {
		switch {
		case x.Pctr > y.Pctr:
			return -1
		case x.Pctr < y.Pctr:
			return 1
		}
		return strings.Compare(x.AdID, y.AdID)
	})
}

// encode packs entries: a count, then each ad ID (length-prefixed) and pCTR.
func encode(es []Entry) []byte {
	n := binary.MaxVarintLen64
	for _, e := range es {
		n += binary.MaxVarintLen64 + len(e.AdID) + 8
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = binary.AppendUvarint(b, uint64(len(e.AdID)))
		b = append(b, e.AdID...)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.Pctr))
	}
	return b
}

var errCorrupt = errors.New("snapshot: corrupt entry list")

func decode(b []byte) ([]Entry, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errCorrupt
	}
	b = b[k:]
	out := make([]Entry, n)
	for i := range out {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l+8 {
			return nil, errCorrupt
		}
		b = b[k:]
		out[i] = Entry{AdID: string(b[:l]), Pctr: math.Float64frombits(binary.LittleEndian.Uint64(b[l:]))}
		b = b[l+8:]
	}
	return out, nil
}

func encodeStat(s AdStat) []byte {
	b := binary.LittleEndian.AppendUint64(nil, math.Float64bits(s.Sum))
	return binary.LittleEndian.AppendUint64(b, uint64(s.N))
}

func decodeStat(b []byte) (AdStat, error) {
	if len(b) != 16 {
		return AdStat{}, errCorrupt
	}
	return AdStat{Sum: math.Float64frombits(binary.LittleEndian.Uint64(b)), N: int64(binary.LittleEndian.Uint64(b[8:]))}, nil
}

// Open opens a store from its URL: redis://HOST:PORT[/DB] for Redis, or a
// directory (dir:PATH or a plain path) for the embedded store.
func Open(ctx context.Context, raw string) (Store, error) {
	if strings.HasPrefix(raw, "redis://") {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("snapshot store %q: %w", raw, err)
		}
		db := 0
		if p := strings.Trim(u.Path, "/"); p != "" {
			if db, err = strconv.Atoi(p); err != nil {
				return nil, fmt.Errorf("snapshot store %q: database %q is not a number", raw, p)
			}
		}
		return OpenRedis(ctx, u.Host, db)
	}
	path := strings.TrimPrefix(raw, "dir:")
	if path == "" {
		return nil, errors.New("snapshot store: empty path")
	}
	return OpenDir(path)
}

// newer orders generations newest first (by creation; ties by name).
func newer(a, b Generation) int {
	if c := b.Created.Compare(a.Created); c != 0 {
		return c
	}
	return strings.Compare(b.Generation, a.Generation)
}

// total sums the shards' progress into g.
func total(m Meta, ps []Progress) Generation {
	g := Generation{Meta: m}
	for _, p := range ps {
		g.Users += p.Users
		g.Pairs += p.Pairs
		g.Bad += p.Bad
	}
	return g
}
