// Package counters keeps real-time activity counters: impressions and
// clicks per key (a user, an ad, a user x topic) over sliding windows.
//
// Each window is kept as 60 buckets of a 60th of its length, with running
// sums: a count covers the current bucket and the 59 before it, so a 1 h
// window counts the last 59 to 60 minutes. Keys hold memory only while they
// have activity inside their longest window, and each counter set holds at
// most a bounded number of keys: activity for a new key beyond the bound is
// dropped and counted.
package counters

import (
	"hash/maphash"
	"sync"
	"time"
)

// Buckets per window.
const Buckets = 60

// Counts are one key's counts in one window.
type Counts struct {
	Impressions, Clicks uint64
}

// Set is the counters of one entity over its windows. It is safe for
// concurrent use.
type Set struct {
	windows []time.Duration
	maxKeys int
	seed    maphash.Seed
	shards  [64]shard
	mu      sync.Mutex // guards keys and dropped
	keys    int
	dropped uint64
}

type shard struct {
	mu   sync.Mutex
	keys map[string]*series
}

// series is one key's windows.
type series struct {
	w    []window
	last int64 // unix nanoseconds of the latest activity
}

type window struct {
	cells      []cell // oldest first, at most Buckets
	imps, clks uint64
}

type cell struct {
	bucket     int64 // time / bucket length
	imps, clks uint64
}

// New returns counters over windows (each at least a minute), holding at
// most maxKeys keys.
func New(windows []time.Duration, maxKeys int) *Set {
	s := &Set{windows: windows, maxKeys: maxKeys, seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].keys = map[string]*series{}
	}
	return s
}

// Windows are the set's windows.
func (s *Set) Windows() []time.Duration { return s.windows }

func (s *Set) shard(key string) *shard {
	return &s.shards[maphash.String(s.seed, key)%uint64(len(s.shards))]
}

// Add counts impressions and clicks for key at time at. Activity older than
// a window does not count in it. It reports false when the activity was
// dropped: a new key, and the set holds its most keys.
func (s *Set) Add(key string, at time.Time, imps, clicks uint32) bool {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sr, ok := sh.keys[key]
	if !ok {
		s.mu.Lock()
		full := s.keys >= s.maxKeys
		if full {
			s.dropped++
		} else {
			s.keys++
		}
		s.mu.Unlock()
		if full {
			return false
		}
		sr = &series{w: make([]window, len(s.windows))}
		sh.keys[key] = sr
	}
	t := at.UnixNano()
	sr.last = max(sr.last, t)
	for i, d := range s.windows {
		sr.w[i].add(t/int64(d/Buckets), imps, clicks)
	}
	return true
}

func (w *window) add(b int64, imps, clks uint32) {
	// Usually the newest bucket; a late event goes into its own bucket.
	j := len(w.cells) - 1
	for j >= 0 && w.cells[j].bucket > b {
		j--
	}
	if j >= 0 && w.cells[j].bucket == b {
		w.cells[j].imps += uint64(imps)
		w.cells[j].clks += uint64(clks)
	} else {
		w.cells = append(w.cells, cell{})
		copy(w.cells[j+2:], w.cells[j+1:])
		w.cells[j+1] = cell{bucket: b, imps: uint64(imps), clks: uint64(clks)}
	}
	w.imps += uint64(imps)
	w.clks += uint64(clks)
	if len(w.cells) > 2*Buckets { // bound late events' cells
		w.expire(w.cells[len(w.cells)-1].bucket)
	}
}

// expire drops the cells outside the window that ends in bucket now.
func (w *window) expire(now int64) {
	k := 0
	for k < len(w.cells) && w.cells[k].bucket <= now-Buckets {
		w.imps -= w.cells[k].imps
		w.clks -= w.cells[k].clks
		k++
	}
	if k > 0 {
		w.cells = append(w.cells[:0], w.cells[k:]...)
	}
}

// Get writes key's counts at time now, one per window, into out (which has
// a length of len(Windows())). A key without activity counts 0.
func (s *Set) Get(key string, now time.Time, out []Counts) {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sr, ok := sh.keys[key]
	if !ok {
		clear(out)
		return
	}
	t := now.UnixNano()
	for i, d := range s.windows {
		w := &sr.w[i]
		w.expire(t / int64(d/Buckets))
		out[i] = Counts{Impressions: w.imps, Clicks: w.clks}
	}
}

// Sweep forgets keys without activity in their longest window, and returns
// how many keys are held.
func (s *Set) Sweep(now time.Time) int {
	longest := time.Duration(0)
	for _, d := range s.windows {
		longest = max(longest, d)
	}
	cutoff := now.Add(-longest).UnixNano()
	held := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, sr := range sh.keys {
			if sr.last < cutoff {
				delete(sh.keys, k)
				s.mu.Lock()
				s.keys--
				s.mu.Unlock()
			}
		}
		held += len(sh.keys)
		sh.mu.Unlock()
	}
	return held
}

// Stats are a set's key count and the activity dropped for lack of room.
func (s *Set) Stats() (keys int, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys, s.dropped
}
