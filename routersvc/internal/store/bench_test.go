package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkBoltFlush times one recorder flush as the router writes it under
// load: 100 ms of 2,500 req/s (250 requests, 3 impressions each, one unit
// increment each, merged counters), into a file already holding 300,000
// impressions. Impression IDs are hashes, so their inserts land all over the
// tree.
func BenchmarkBoltFlush(b *testing.B) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	seq := 0
	op := func(requests int) Op {
		op := Op{ImpressionTTL: 24 * time.Hour}
		for range requests {
			seq++
			req := "bench-" + strconv.Itoa(seq)
			user := "u" + strconv.Itoa(seq%5000)
			for slot := 1; slot <= 3; slot++ {
				h := sha256.Sum256([]byte(req + "/" + strconv.Itoa(slot)))
				op.Impressions = append(op.Impressions, Impression{
					ID: hex.EncodeToString(h[:16]), RequestID: req, Domain: "feed", UserID: user, Version: "v2",
					Strategy: "production", Group: "production", Propensity: 1, Slot: slot, Price: 123456, At: time.Now(),
				})
			}
			op.Units = append(op.Units, UnitIncr{Group: "feed//production", Unit: user, N: 3})
		}
		for _, f := range []string{"v2.requests", "v2.lat.3"} {
			op.Counters = append(op.Counters, CounterIncr{Key: "health/feed", Field: f, Delta: float64(requests)})
		}
		return op
	}
	for range 100 {
		if _, err := s.Apply(ctx, op(1000)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		o := op(250)
		b.StartTimer()
		if _, err := s.Apply(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*250), "µs/request")
}

// BenchmarkBoltSweep times one sweep of a file holding 300,000 live
// impressions and 1,000 expired: through the expiry index (what the
// sweeper does), and by visiting every entry in a write transaction (what
// it did before the index, deletes left out).
func BenchmarkBoltSweep(b *testing.B) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for batch := range 300 {
		op := Op{ImpressionTTL: time.Hour}
		for i := range 1000 {
			h := sha256.Sum256([]byte(strconv.Itoa(batch*1000 + i)))
			op.Impressions = append(op.Impressions, Impression{ID: hex.EncodeToString(h[:16]), Domain: "feed", UserID: "u", Version: "v2"})
		}
		if _, err := s.Apply(ctx, op); err != nil {
			b.Fatal(err)
		}
	}
	expired := func() {
		op := Op{ImpressionTTL: time.Nanosecond}
		for i := range 1000 {
			op.Impressions = append(op.Impressions, Impression{ID: "old" + strconv.Itoa(i)})
		}
		if _, err := s.Apply(ctx, op); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("index", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			expired()
			b.StartTimer()
			if _, err := s.sweepOnce(time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("full-scan", func(b *testing.B) {
		for b.Loop() {
			err := s.db.Update(func(tx *bolt.Tx) error {
				now := time.Now().UnixNano()
				n := 0
				for _, name := range [][]byte{bOnce, bDuels, bImps, bResults} {
					c := tx.Bucket(name).Cursor()
					for k, v := c.First(); k != nil; k, v = c.Next() {
						if len(v) >= 8 && int64(binary.BigEndian.Uint64(v)) < now {
							n++
						}
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBoltFlushShadow times one recorder flush of 250 shadowed
// requests' comparisons: each op some 30 increments of one counter hash
// (latency bucket, top-k overlap, Kendall's tau, score sums, 12 + 12 PSI
// bins), as lab.compare writes them.
func BenchmarkBoltFlushShadow(b *testing.B) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	ops := make([]Op, 250)
	for i := range ops {
		for _, f := range []string{"lat.3", "compared", "overlap", "tau", "tau_n", "prod_sum", "shadow_sum"} {
			ops[i].Counters = append(ops[i].Counters, CounterIncr{Key: "shadow|feed|v1", Field: f, Delta: 1})
		}
		for bin := range 12 {
			ops[i].Counters = append(ops[i].Counters,
				CounterIncr{Key: "shadow|feed|v1", Field: "prod_bin." + strconv.Itoa(bin), Delta: 2},
				CounterIncr{Key: "shadow|feed|v1", Field: "shadow_bin." + strconv.Itoa(bin), Delta: 2})
		}
	}
	for b.Loop() {
		if _, err := s.ApplyAll(ctx, ops); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(ops)), "µs/request")
}
