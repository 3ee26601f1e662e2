package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

func run(ctx context.Context, o options) error {
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	s := &suite{o: o}
	defer s.stop()
	if err := s.setup(ctx); err != nil {
		return err
	}
	configs, closeAll, err := s.configs()
	if err != nil {
		return err
	}
	defer closeAll()
	if len(o.only) == 1 && o.only[0] == len(configs)+1 { // the streaming measurement alone
		sr, err := s.measureStream(ctx, s.pool)
		if err != nil {
			return err
		}
		fmt.Printf("stream through Kafka: %.0f req/s, %.2f CPU s/1000 (+%.2f broker) %v, p50 %v p99 %v, precomputed hit p99 %.2f ms, miss p99 %.2f ms, errors %d\n",
			sr.throughput, sr.cpuPer1000, sr.brokerPer1000, cpuByText(sr.cpuBy), sr.p50, sr.p99, sr.hit[1], sr.miss[1], sr.errors)
		return nil
	}
	if len(o.only) > 0 {
		var chosen []config
		for _, n := range o.only {
			if n > len(configs) {
				return fmt.Errorf("-only %d: there are %d configurations, and %d is the streaming measurement (alone)", n, len(configs), len(configs)+1)
			}
			chosen = append(chosen, configs[n-1])
		}
		configs = chosen
	}
	var results []result
	for _, c := range configs {
		r, err := s.measure(ctx, c)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		fmt.Printf("%-40s %7.0f req/s  %5.2f CPU s/1000  p99 %v  errors %d\n", r.name, r.saturation, r.cpuPer1000, r.p99, r.errors)
		if r.cpuByEveryday != nil {
			fmt.Printf("%-40s at %d req/s: %.2f CPU ms per request (%s)\n", "", everyday, r.cpuEveryday, cpuByText(r.cpuByEveryday))
		}
		results = append(results, r)
	}
	alt, altFailed, err := s.alternate(ctx, configs, o.pairs)
	if err != nil {
		return fmt.Errorf("alternated ratios: %w", err)
	}
	altMD := alternatedMarkdown(alt, o.pairs, altFailed)
	if len(o.only) > 0 {
		fmt.Print(altMD)
		if f, e := indexOf(results, featuresConfig), indexOf(results, featuresEmptyConfig); f >= 0 && e >= 0 && results[e].cpuEveryday > 0 {
			fmt.Printf("featuresvc CPU at %d req/s, GetFeatures / empty call: %.2f\n", everyday, results[f].cpuEveryday/results[e].cpuEveryday)
		}
		if line := s.stateLine(results); line != "" {
			fmt.Println(line)
		}
		return nil // a partial run writes nothing
	}
	// The router's overhead is measured at the reference rate, or at the
	// everyday rate when the pipeline saturates near the reference one (its
	// calls would then queue and fail).
	oRate := refRate(o.rates)
	if len(results) > 0 && results[0].saturation < 1.2*float64(oRate) {
		oRate = min(oRate, everyday)
	}
	down, err := s.overhead(ctx, oRate)
	if err != nil {
		return err
	}
	sr, err := s.measureStream(ctx, s.pool)
	if err != nil {
		return fmt.Errorf("streaming: %w", err)
	}
	fmt.Printf("%-40s %7.0f req/s  %5.2f CPU s/1000 (+%.2f broker)  p99 %v  hit/miss p99 %.2f/%.2f ms  errors %d\n",
		"stream through Kafka", sr.throughput, sr.cpuPer1000, sr.brokerPer1000, sr.p99, sr.hit[1], sr.miss[1], sr.errors)
	md := s.markdown(results, down) + s.streamMarkdown(sr, results[0]) + floorMarkdown(results)
	if line := s.stateLine(results); line != "" {
		md += "\n" + line + "\n"
	}
	md += altMD
	if o.smoke {
		fmt.Println(md)
		// The smoke proves the suite works; it gates nothing on speed. With
		// its time limits far above any answer's time, no call may fail.
		for _, r := range results {
			if r.saturation <= 0 || r.errors != 0 {
				return fmt.Errorf("smoke: %s: %.0f req/s, %d errors", r.name, r.saturation, r.errors)
			}
		}
		if (o.pairs > 0 && len(alt) == 0) || altFailed != 0 {
			return fmt.Errorf("smoke: %d ratios measured in alternation, %d requests failed", len(alt), altFailed)
		}
		if sr.throughput <= 0 || sr.errors != 0 {
			return fmt.Errorf("smoke: streaming: %.0f req/s, %d errors", sr.throughput, sr.errors)
		}
		return nil
	}
	if err := writeSection(o.out, md); err != nil {
		return err
	}
	return writeSVG(o.svg, results, o.rates)
}

// refRate is the rate ratios are taken at: 1,000 req/s when measured.
func refRate(rates []int) int {
	for _, r := range rates {
		if r == 1000 {
			return r
		}
	}
	return rates[0]
}

// overheadRun is one measurement of the router's overhead, in ms: medians
// over the requests of one run.
type overheadRun struct {
	rate                      int     // req/s
	e2e                       float64 // as the load generator saw it
	total                     float64 // the router's handler, from its Server-Timing
	features, ranker, auction float64 // the router's downstream calls, hop included
	own                       float64 // total - features - ranker - auction, per request
	// p99 of each part, and end to end: where the tail comes from.
	p99 map[string]float64
}

// overhead measures the router's overhead at rate req/s from the
// Server-Timing header of every Rank answer: the handler's total minus its
// downstream calls, per request. Returns the run with the median.
func (s *suite) overhead(ctx context.Context, rate int) (overheadRun, error) {
	cc, err := grpc.NewClient(s.addr["router"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return overheadRun{}, err
	}
	defer cc.Close()
	client := routerv1.NewRouterServiceClient(cc)
	reqs, err := newPool(2, 1024)
	if err != nil {
		return overheadRun{}, err
	}
	var runs []overheadRun
	for range s.o.runs {
		var mu sync.Mutex
		parts := map[string][]float64{}
		c := func(ctx context.Context, _ *rand.Rand, _ int) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var md metadata.MD
			if _, err := client.Rank(ctx, reqs.rank(), grpc.Header(&md)); err != nil {
				return err
			}
			t, err := parseTiming(md.Get("server-timing"))
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for k, v := range t {
				parts[k] = append(parts[k], v)
			}
			parts["own"] = append(parts["own"], t["total"]-t["features"]-t["ranker"]-t["auction"])
			return nil
		}
		p50, e2e99, failed := openLoop(ctx, c, rate, s.o.duration)
		// A call that fails (a deadline on a loaded machine) leaves no
		// timing; more than 1% of them would bias the medians.
		sent := int(float64(rate) * s.o.duration.Seconds())
		if 100*failed > sent || len(parts["own"]) == 0 {
			return overheadRun{}, fmt.Errorf("router overhead: %d of its %d calls failed", failed, sent)
		}
		if failed > 0 {
			fmt.Printf("router overhead: %d of %d calls failed, left out\n", failed, sent)
		}
		runs = append(runs, overheadRun{rate: rate, e2e: p50, total: median(parts["total"]), features: median(parts["features"]),
			ranker: median(parts["ranker"]), auction: median(parts["auction"]), own: median(parts["own"]), p99: map[string]float64{"e2e": e2e99}})
		for k, v := range parts {
			slices.Sort(v)
			runs[len(runs)-1].p99[k] = v[min(len(v)-1, len(v)*99/100)]
		}
	}
	slices.SortFunc(runs, func(a, b overheadRun) int { return cmp.Compare(a.own, b.own) })
	return runs[len(runs)/2], ctx.Err()
}

// parseTiming reads "name;dur=ms, ..." (the router's Server-Timing).
func parseTiming(v []string) (map[string]float64, error) {
	if len(v) != 1 {
		return nil, fmt.Errorf("server-timing header %q", v)
	}
	out := map[string]float64{}
	for _, part := range strings.Split(v[0], ", ") {
		name, dur, ok := strings.Cut(part, ";dur=")
		f, err := strconv.ParseFloat(dur, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("server-timing entry %q", part)
		}
		out[name] = f
	}
	return out, nil
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

func procsText(n int) string {
	if n <= 0 {
		return "Go's default GOMAXPROCS (one per CPU)"
	}
	return fmt.Sprintf("GOMAXPROCS=%d", n)
}

// cpuByText lists each process's CPU ms per request, largest first.
func cpuByText(by map[string]float64) string {
	names := slices.Collect(maps.Keys(by))
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(by[b], by[a]) })
	var parts []string
	for _, n := range names {
		if by[n] >= 0.005 {
			parts = append(parts, fmt.Sprintf("%s %.2f ms", n, by[n]))
		}
	}
	return strings.Join(parts, ", ")
}

func (s *suite) markdown(rs []result, down overheadRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Command: `make bench` (`bench/cmd/adrankbench`), %s. Machine: %d CPU %s, %s. Services run with %s; the load generator shares the machine.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), cpuModel(), runtime.Version(), procsText(s.o.procs))
	fmt.Fprintf(&b, "Each figure is the median of %d runs of %v. Requests: 50 candidates, 3 slots, `feed` with its GBDT (v2). Saturation: 64 concurrent clients, closed loop. Latency: open loop at the offered rate, measured from each request's scheduled send time.\n\n", s.o.runs, s.o.duration)
	b.WriteString("| configuration | saturation (req/s) | CPU s per 1,000 req |")
	for _, r := range s.o.rates {
		fmt.Fprintf(&b, " p50 / p99 ms at %d/s |", r)
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---|", len(s.o.rates)) + "\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %d. %s | %.0f | %.2f |", indexOf(rs, r.name)+1, r.name, r.saturation, r.cpuPer1000)
		for _, rate := range s.o.rates {
			fmt.Fprintf(&b, " %.2f / %.2f |", r.p50[rate], r.p99[rate])
		}
		b.WriteString("\n")
	}
	ref := refRate(s.o.rates)
	grpcR, rest, shadow, ml := rs[0], rs[1], rs[2], rs[4]
	if lib := indexOf(rs, libraryConfig); lib >= 0 {
		fmt.Fprintf(&b, "\nThe seed's three architectures, the same requests (rows 1, 5 and %d; p99 at %d req/s; CPU of every process that serves, the load generator's own included for the monolith):\n\n", lib+1, ref)
		b.WriteString("| architecture | processes serving | saturation (req/s) | CPU ms per request | p99 ms | throughput / monolith's |\n|---|---|---|---|---|---|\n")
		for _, a := range []struct {
			name  string
			procs string
			r     result
		}{
			{"microservices", "router, features, 2 rankers, auction (+ Consul)", grpcR},
			{"ML as one service", "one (+ Consul)", ml},
			{"monolith (library)", "none: the caller's own", rs[lib]},
		} {
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.3f | %.2f | %.2f |\n", a.name, a.procs, a.r.saturation, a.r.cpuPer1000, a.r.p99[ref], a.r.saturation/rs[lib].saturation)
		}
	}
	fmt.Fprintf(&b, "\nRatios and targets (p99 at %d req/s):\n\n", ref)
	fmt.Fprintf(&b, "| measure | value | target | |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| gRPC p99 at %d req/s | %.2f ms | ≤ 2 ms at 1,000 req/s | %s |\n", ref, grpcR.p99[ref], verdict(ref == 1000 && grpcR.p99[ref] <= 2))
	fmt.Fprintf(&b, "| gRPC throughput at saturation | %.0f req/s | ≥ 4,000 req/s | %s |\n", grpcR.saturation, verdict(grpcR.saturation >= 4000))
	fmt.Fprintf(&b, "| microservices / ML-as-one-service throughput | %.2f | ≥ 0.50 | %s |\n", grpcR.saturation/ml.saturation, verdict(grpcR.saturation/ml.saturation >= 0.5))
	fmt.Fprintf(&b, "| shadow-on / shadow-off p99 | %.2f | ≤ 1.05 | %s |\n", shadow.p99[ref]/grpcR.p99[ref], verdict(shadow.p99[ref]/grpcR.p99[ref] <= 1.05))
	fmt.Fprintf(&b, "| REST / gRPC p99 | %.2f | ≤ 1.30 | %s |\n", rest.p99[ref]/grpcR.p99[ref], verdict(rest.p99[ref]/grpcR.p99[ref] <= 1.30))
	fmt.Fprintf(&b, "| router overhead at %d req/s: its handler's time minus its calls to features, ranker and auction (p50 of each request's difference, from the router's Server-Timing) | %.3f ms | | |\n", down.rate, down.own)
	fmt.Fprintf(&b, "| where a request's time goes at %d req/s (p50s): end to end %.2f ms; in the router's handler %.2f ms; its calls to features %.2f, ranker %.2f, auction %.2f ms (each including its loopback hop) | | | |\n",
		down.rate, down.e2e, down.total, down.features, down.ranker, down.auction)
	fmt.Fprintf(&b, "| the same as p99s, each over the same requests: end to end %.2f ms; the router's handler %.2f ms; features %.2f, ranker %.2f, auction %.2f ms; the router's own %.2f ms | | | |\n",
		down.p99["e2e"], down.p99["total"], down.p99["features"], down.p99["ranker"], down.p99["auction"], down.p99["own"])
	fmt.Fprintf(&b, "| CPU per request in configuration 1, by process | %s | | |\n", cpuByText(grpcR.cpuBy))
	return b.String()
}

// floorMarkdown sets each configuration against the floor chain at the
// everyday rate, in one run: p99 and CPU per request as ratios, which say
// more than absolute times on shared machines (#16's targets).
func floorMarkdown(rs []result) string {
	fi, ei := indexOf(rs, floorConfig), indexOf(rs, "empty gRPC call: one hop's floor")
	if fi < 0 || ei < 0 || rs[fi].cpuByEveryday == nil {
		return "" // the everyday rate was not measured
	}
	floor, empty := rs[fi], rs[ei]
	var b strings.Builder
	fmt.Fprintf(&b, "\nAgainst the floor chain at %d req/s, in the same run: the pipeline's topology (a router, then three calls one after another) with empty handlers and the services' gRPC settings (`bench/cmd/floorsvc`), sent the same Rank requests. CPU is every serving process's, from /proc, over the open-loop runs at %d req/s.\n\n", everyday, everyday)
	b.WriteString("| configuration | p99 ms | p99 / floor chain | p99 / empty call | CPU ms per request | CPU / floor chain | CPU by process (ms per request) |\n|---|---|---|---|---|---|---|\n")
	for i, r := range rs {
		if r.cpuByEveryday == nil {
			continue
		}
		fmt.Fprintf(&b, "| %d. %s | %.2f | %.2f | %.1f | %.2f | %.2f | %s |\n", i+1, r.name, r.p99[everyday], r.p99[everyday]/floor.p99[everyday],
			r.p99[everyday]/empty.p99[everyday], r.cpuEveryday, r.cpuEveryday/floor.cpuEveryday, cpuByText(r.cpuByEveryday))
	}
	grpcR, rest, shadow := rs[0], rs[1], rs[2]
	fmt.Fprintf(&b, "\nTargets of #16, this run: pipeline p99 / floor chain **%.2f** (target ≤ 1.3); services' CPU / floor chain **%.2f** (≤ 1.15); REST CPU / gRPC CPU **%.2f** (≤ 1.2); the router's CPU with every request shadowed / without **%.2f** (≤ 1.15).\n",
		grpcR.p99[everyday]/floor.p99[everyday], grpcR.cpuEveryday/floor.cpuEveryday, rest.cpuEveryday/grpcR.cpuEveryday,
		shadow.cpuByEveryday["routersvc"]/grpcR.cpuByEveryday["routersvc"])
	if f, e := indexOf(rs, featuresConfig), indexOf(rs, featuresEmptyConfig); f >= 0 && e >= 0 && rs[e].cpuEveryday > 0 {
		fmt.Fprintf(&b, "\nTarget of #18, this run: featuresvc's CPU for GetFeatures (1 user, 100 ads) / for an empty call **%.2f** (≤ 1.2): %.3f against %.3f ms per request; p99 %.2f against %.2f ms.\n",
			rs[f].cpuEveryday/rs[e].cpuEveryday, rs[f].cpuEveryday, rs[e].cpuEveryday, rs[f].p99[everyday], rs[e].p99[everyday])
	}
	return b.String()
}

// stateLine sets the router whose store was filled against the fresh one
// (configuration 1) at the everyday rate (#16: flat with state), with the
// sizes of both stores; "" when either was not measured.
func (s *suite) stateLine(rs []result) string {
	fresh, full := indexOf(rs, grpcConfig), indexOf(rs, fullConfig)
	if fresh < 0 || full < 0 || rs[fresh].cpuByEveryday == nil || rs[full].cpuByEveryday == nil || s.filled.impressions == 0 {
		return ""
	}
	a, b := rs[fresh], rs[full]
	size := func(path string) string {
		info, err := os.Stat(path)
		if err != nil {
			return "?"
		}
		return fmt.Sprintf("%.0f MB", float64(info.Size())/1e6)
	}
	return fmt.Sprintf("Flat with state (#16, target ≤ 1.1 each), this run at %d req/s: a router whose store held %d impressions (%.0f MB, written in %v) against a fresh one: "+
		"CPU per request **%.2f** (%.2f against %.2f ms), the router process's **%.2f** (%.2f against %.2f ms), p99 **%.2f** (%.2f against %.2f ms); p50 %.2f (%.2f against %.2f ms). The stores now: %s filled, %s fresh.",
		everyday, s.filled.impressions, float64(s.filled.bytes)/1e6, s.filled.took.Round(time.Second),
		b.cpuEveryday/a.cpuEveryday, b.cpuEveryday, a.cpuEveryday,
		b.cpuByEveryday["routersvc-full"]/a.cpuByEveryday["routersvc"], b.cpuByEveryday["routersvc-full"], a.cpuByEveryday["routersvc"],
		b.p99[everyday]/a.p99[everyday], b.p99[everyday], a.p99[everyday], b.p50[everyday]/a.p50[everyday], b.p50[everyday], a.p50[everyday], size(s.filled.path), size(filepath.Join(s.tmp, "router.db")))
}

func indexOf(rs []result, name string) int {
	for i, r := range rs {
		if r.name == name {
			return i
		}
	}
	return -1
}

func writeSection(path, md string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	const start, end = "<!-- bench:start -->", "<!-- bench:end -->"
	s := string(b)
	i, j := strings.Index(s, start), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s section", path, start, end)
	}
	s = s[:i+len(start)] + "\n" + md + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

// writeSVG plots p99 latency against the offered rate, one line per
// configuration.
func writeSVG(path string, rs []result, rates []int) error {
	const w, h, left, bottom, top, right = 760, 420, 60, 50, 20, 250
	// p99 spans from about 1 ms to hundreds past saturation: a log scale.
	minY, maxY := math.Inf(1), 0.0
	for _, r := range rs {
		for _, rate := range rates {
			if v := r.p99[rate]; v > 0 {
				minY, maxY = math.Min(minY, v), math.Max(maxY, v)
			}
		}
	}
	if maxY == 0 {
		minY, maxY = 1, 10
	}
	lo, hi := math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
	if hi <= lo {
		hi = lo + 1
	}
	maxX := float64(rates[len(rates)-1])
	x := func(v float64) float64 { return left + v/maxX*(w-left-right) }
	y := func(v float64) float64 {
		return h - bottom - (math.Log10(math.Max(v, math.Pow(10, lo)))-lo)/(hi-lo)*(h-bottom-top)
	}
	colors := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n",
		left, h-bottom, w-right, h-bottom, left, top, left, h-bottom)
	for e := lo; e <= hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v > math.Pow(10, hi) {
				break
			}
			fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%g</text><line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="#ddd"/>`+"\n", left-6, y(v)+4, v, left, y(v), w-right, y(v))
		}
	}
	for _, rate := range rates {
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%d</text>`+"\n", x(float64(rate)), h-bottom+18, rate)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">offered load (requests/s)</text>`+"\n", (w-right+left)/2, h-12)
	fmt.Fprintf(&b, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">p99 latency (ms, log scale)</text>`+"\n", (h-bottom+top)/2, (h-bottom+top)/2)
	for i, r := range rs {
		var pts []string
		for _, rate := range rates {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(rate)), y(r.p99[rate])))
		}
		c := colors[i%len(colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%d. %s</text>`+"\n", w-right+12, top+i*20, c, w-right+30, top+i*20+10, i+1, r.name)
	}
	b.WriteString("</svg>\n")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// streamMarkdown is the streaming deployment's section, against gRPC
// real-time (configuration 1) of the same run.
func (s *suite) streamMarkdown(sr streamResult, grpcR result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nStreaming through Kafka (the development broker, `bin/devbroker`; a router running the stream worker, polls of up to 64 requests, each poll one transaction and one micro-batch). Throughput: a backlog of requests drained, produce to the last committed answer. CPU: the worker, features, rankers and auction; the broker's own apart.\n\n")
	b.WriteString("| measure | value | target | |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| ranked requests per second through the stream | %.0f | | |\n", sr.throughput)
	ratio := sr.cpuPer1000 / grpcR.cpuPer1000
	fmt.Fprintf(&b, "| CPU ms per ranked request: stream / gRPC real-time | %.3f / %.3f = %.2f | ≤ 0.6 | %s |\n", sr.cpuPer1000, grpcR.cpuPer1000, ratio, verdict(ratio <= 0.6))
	fmt.Fprintf(&b, "| the same with the broker's CPU counted | %.3f / %.3f = %.2f | | |\n", sr.cpuPer1000+sr.brokerPer1000, grpcR.cpuPer1000, (sr.cpuPer1000+sr.brokerPer1000)/grpcR.cpuPer1000)
	fmt.Fprintf(&b, "| CPU per streamed request, by process | %s | | |\n", cpuByText(sr.cpuBy))
	for _, rate := range s.o.rates {
		if p99, ok := sr.p99[rate]; ok {
			fmt.Fprintf(&b, "| produce to committed answer at %d req/s, p50 / p99 | %.2f / %.2f ms | | |\n", rate, sr.p50[rate], p99)
		}
	}
	fmt.Fprintf(&b, "| `Rank` at %d req/s answered from a precomputed answer, p50 / p99 | %.2f / %.2f ms | | |\n", sr.hitRate, sr.hit[0], sr.hit[1])
	fmt.Fprintf(&b, "| `Rank` at %d req/s ranked in full by the same router, p50 / p99 | %.2f / %.2f ms | | |\n", sr.hitRate, sr.miss[0], sr.miss[1])
	return b.String()
}
