package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

// streamLabels are the processes a streamed request uses, the broker aside.
var streamLabels = []string{"routersvc-stream", "featuresvc", "auctionsvc", "rankersvc-v2", "rankersvc-v1"}

// streamResult is the streaming deployment, measured.
type streamResult struct {
	throughput      float64 // ranked requests/s through the stream (backlog drained)
	cpuPer1000      float64 // worker and services, CPU s per 1,000 ranked requests
	brokerPer1000   float64 // the development broker's own
	cpuBy           map[string]float64
	p50, p99        map[int]float64 // produce to committed answer, ms, at each rate
	hit, miss       [2]float64      // Rank p50, p99 (ms): a precomputed answer, a full ranking, same router
	hitRate, errors int
}

// measureStream drains backlogs of requests through the stream (throughput
// and CPU), offers fixed rates (latency from produce to the committed
// answer), then calls Rank on the stream router for requests it has
// answered (precomputed) and for ones it has not (a full ranking).
func (s *suite) measureStream(ctx context.Context, reqs *pool) (streamResult, error) {
	r := streamResult{p50: map[int]float64{}, p99: map[int]float64{}}
	broker := s.addr["kafka"]
	prod, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.DefaultProduceTopic("adrank.rank.requests"), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		return r, err
	}
	defer prod.Close()
	backlog := 3000
	if s.o.smoke {
		backlog = 200
	}
	var tputs, cpus, brokers []float64
	by := map[string][]float64{}
	for run := range s.o.runs {
		prefix := fmt.Sprintf("sat%d-", run)
		recv, stop, err := s.answers(ctx, prefix)
		if err != nil {
			return r, err
		}
		wait := func() {}
		if run == 0 {
			wait = s.profile(config{name: "stream", cpu: append(slices.Clone(streamLabels), "devbroker")})
		}
		before := s.cpuByLabel(append(slices.Clone(streamLabels), "devbroker"))
		start := time.Now()
		for k := range backlog {
			if err := s.produceRank(ctx, prod, reqs, prefix+strconv.Itoa(k), nil); err != nil {
				stop()
				return r, err
			}
		}
		got := 0
		timeout := time.After(time.Minute)
	drain:
		for got < backlog {
			select {
			case <-recv:
				got++
			case <-timeout:
				break drain
			}
		}
		took := time.Since(start)
		stop()
		wait()
		if got < backlog {
			return r, fmt.Errorf("stream: %d of %d answers within a minute", got, backlog)
		}
		after := s.cpuByLabel(append(slices.Clone(streamLabels), "devbroker"))
		var total float64
		for _, l := range streamLabels {
			d := after[l] - before[l]
			total += d
			by[l] = append(by[l], d/float64(backlog)*1000)
		}
		tputs = append(tputs, float64(backlog)/took.Seconds())
		cpus = append(cpus, total/float64(backlog)*1000)
		brokers = append(brokers, (after["devbroker"]-before["devbroker"])/float64(backlog)*1000)
	}
	r.throughput, r.cpuPer1000, r.brokerPer1000 = median(tputs), median(cpus), median(brokers)
	r.cpuBy = map[string]float64{}
	for l, v := range by {
		r.cpuBy[l] = median(v)
	}
	for _, rate := range s.o.rates {
		if float64(rate) > 0.8*r.throughput {
			continue // past what the stream sustains here: a queue, not a latency
		}
		var p50s, p99s []float64
		for run := range s.o.runs {
			p50, p99, err := s.streamLatency(ctx, prod, reqs, rate, fmt.Sprintf("rate%d-%d-", rate, run))
			if err != nil {
				return r, err
			}
			p50s, p99s = append(p50s, p50), append(p99s, p99)
		}
		r.p50[rate], r.p99[rate] = median(p50s), median(p99s)
	}
	return r, s.precomputedLatency(ctx, reqs, &r)
}

// produceRank produces one pooled request under id (protobuf).
func (s *suite) produceRank(ctx context.Context, prod *kgo.Client, reqs *pool, id string, sent func()) error {
	i, _ := reqs.take()
	p := reqs.reqs[i]
	v, err := proto.Marshal(&routerv1.RankRequest{RequestId: id, UserId: p.GetUserId(), Domain: p.GetDomain(), Slots: p.GetSlots(), Context: p.GetContext(), Candidates: p.GetCandidates()})
	if err != nil {
		return err
	}
	reqs.mark(i)
	if sent != nil {
		sent()
	}
	prod.Produce(ctx, &kgo.Record{Key: []byte(p.GetUserId()), Value: v}, func(_ *kgo.Record, err error) {
		if err != nil {
			fmt.Println("stream bench: produce:", err)
		}
	})
	return nil
}

// answer is a committed answer's request ID, and when it was read.
type answer struct {
	id string
	at time.Time
}

// answers follows the answers topic (read_committed, from its end) and
// sends the answers to requests with prefix, as they are read, on the
// channel.
func (s *suite) answers(ctx context.Context, prefix string) (<-chan answer, func(), error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.addr["kafka"]), kgo.ConsumeTopics("adrank.rank.results"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(10*time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	// A first poll fixes the starting offsets before anything is produced.
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	cl.PollFetches(pctx)
	cancel()
	out := make(chan answer, 1<<16)
	cctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(rec *kgo.Record) {
				if id := string(rec.Key); strings.HasPrefix(id, prefix) {
					out <- answer{id, now}
				}
			})
		}
	}()
	return out, func() { stop(); wg.Wait(); cl.Close() }, nil
}

// streamLatency offers rate requests/s for the run's duration and returns
// the p50 and p99 (ms) from each request's scheduled produce time to its
// committed answer.
func (s *suite) streamLatency(ctx context.Context, prod *kgo.Client, reqs *pool, rate int, prefix string) (float64, float64, error) {
	recv, stop, err := s.answers(ctx, prefix)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	interval := time.Second / time.Duration(rate)
	total := int(s.o.duration / interval)
	sent := make([]time.Time, total)
	start := time.Now()
	for n := range total {
		at := start.Add(time.Duration(n) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		if err := s.produceRank(ctx, prod, reqs, prefix+strconv.Itoa(n), func() { sent[n] = at }); err != nil {
			return 0, 0, err
		}
	}
	var lat []float64
	timeout := time.After(time.Minute)
	for len(lat) < total {
		select {
		case a := <-recv:
			n, _ := strconv.Atoi(strings.TrimPrefix(a.id, prefix))
			lat = append(lat, float64(a.at.Sub(sent[n]).Microseconds())/1000)
		case <-timeout:
			return 0, 0, fmt.Errorf("stream at %d/s: %d of %d answers within a minute", rate, len(lat), total)
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return q(0.5), q(0.99), nil
}

// precomputedLatency calls Rank on the stream router at a fixed rate for
// requests it has streamed (answered from the precomputed store) and for
// the same requests with one slot fewer (never streamed: ranked in full),
// and checks each answer's source.
func (s *suite) precomputedLatency(ctx context.Context, reqs *pool, r *streamResult) error {
	cc, err := grpc.NewClient(s.addr["stream"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	client := routerv1.NewRouterServiceClient(cc)
	streamed := reqs.taken()
	call := func(hit bool) call {
		return func(ctx context.Context, rng *rand.Rand, _ int) error {
			ctx, cancel := context.WithTimeout(ctx, s.callTimeout())
			defer cancel()
			p := reqs.reqs[streamed[rng.IntN(len(streamed))]]
			slots := p.GetSlots()
			if !hit {
				slots--
			}
			resp, err := client.Rank(ctx, &routerv1.RankRequest{UserId: p.GetUserId(), Domain: p.GetDomain(), Slots: slots, Context: p.GetContext(), Candidates: p.GetCandidates()})
			if err == nil && (resp.GetSource() == routerv1.Source_SOURCE_PRECOMPUTED) != hit {
				err = fmt.Errorf("hit %v: source %v", hit, resp.GetSource())
			}
			return err
		}
	}
	r.hitRate = min(500, s.o.rates[0])
	for i, hit := range []bool{true, false} {
		var p50s, p99s []float64
		for range s.o.runs {
			p50, p99, failed := openLoop(ctx, call(hit), r.hitRate, s.o.duration)
			p50s, p99s = append(p50s, p50), append(p99s, p99)
			r.errors += failed
		}
		v := [2]float64{median(p50s), median(p99s)}
		if i == 0 {
			r.hit = v
		} else {
			r.miss = v
		}
	}
	return ctx.Err()
}
