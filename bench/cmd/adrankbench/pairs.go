package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// #16's ratios move between runs of one build by more than their targets
// allow (BENCHMARKS.md: the pipeline's CPU against the floor chain's from
// 1.11 to 1.54). So each ratio is also measured in alternation: rounds of
// the two configurations back to back at the everyday rate, in the order
// a, b then b, a, so that a drift of the machine falls on both alike. The
// report gives each ratio's median over the rounds and its range.

// sample is one open-loop run at the everyday rate.
type sample struct {
	cpu      float64            // CPU ms per request, every process of the configuration
	by       map[string]float64 // the same, by process label
	p50, p99 float64            // ms
}

// everydayRun runs c's open loop once at the everyday rate, with the CPU
// its processes used.
func (s *suite) everydayRun(ctx context.Context, c config) (sample, int) {
	before := s.cpuByLabel(c.cpu)
	p50, p99, failed := openLoop(ctx, c.call, everyday, s.o.duration)
	n := float64(everyday) * s.o.duration.Seconds()
	out := sample{by: map[string]float64{}, p50: p50, p99: p99}
	for label, sec := range s.cpuByLabel(c.cpu) {
		d := (sec - before[label]) / n * 1000
		out.cpu += d
		out.by[label] = d
	}
	return out, failed
}

// ratio is one of #16's targets: the measure of configuration a against
// configuration b, at most target.
type ratio struct {
	what   string
	target float64
	of     func(a, b sample) float64
}

// pairing is a pair of configurations and the ratios taken of them.
type pairing struct {
	a, b   string
	ratios []ratio
}

// pairings are the compared configurations; the filled store's only when
// it was filled.
func pairings(filled bool) []pairing {
	cpu := func(a, b sample) float64 { return a.cpu / b.cpu }
	p99 := func(a, b sample) float64 { return a.p99 / b.p99 }
	router := func(aLabel string) func(a, b sample) float64 {
		return func(a, b sample) float64 { return a.by[aLabel] / b.by["routersvc"] }
	}
	ps := []pairing{
		{grpcConfig, floorConfig, []ratio{{"pipeline p99 / floor chain's", 1.3, p99}, {"services' CPU / floor chain's", 1.15, cpu}}},
		{restConfig, grpcConfig, []ratio{{"REST CPU / gRPC CPU", 1.2, cpu}}},
		{shadowConfig, grpcConfig, []ratio{{"the router's CPU, every request shadowed / none", 1.15, router("routersvc")}}},
	}
	if !filled {
		return ps
	}
	return append(ps, pairing{fullConfig, grpcConfig, []ratio{
		{"store filled / fresh: CPU", 1.1, cpu},
		{"store filled / fresh: the router process's CPU", 1.1, router("routersvc-full")},
		{"store filled / fresh: p99", 1.1, p99},
		{"store filled / fresh: p50", 1.1, func(a, b sample) float64 { return a.p50 / b.p50 }},
	}})
}

// alternated is one ratio's values over the rounds.
type alternated struct {
	ratio
	values []float64
}

// alternate measures every pairing whose two configurations are among cs,
// rounds times each, and returns each ratio's values and the requests that
// failed.
//
// A configuration's setup puts its experiment in force; the one in force
// afterwards is that of configuration 1 (none), which what follows expects.
func (s *suite) alternate(ctx context.Context, cs []config, rounds int) ([]alternated, int, error) {
	if rounds <= 0 {
		return nil, 0, nil
	}
	byName := map[string]config{}
	for _, c := range cs {
		byName[c.name] = c
	}
	var out []alternated
	failed := 0
	for _, p := range pairings(s.filled.impressions > 0) {
		a, okA := byName[p.a]
		b, okB := byName[p.b]
		if !okA || !okB {
			continue
		}
		first := len(out)
		for _, r := range p.ratios {
			out = append(out, alternated{ratio: r})
		}
		for round := range rounds {
			order := []config{a, b}
			if round%2 == 1 {
				order = []config{b, a}
			}
			got := map[string]sample{}
			for _, c := range order {
				if err := c.setup(); err != nil {
					return nil, failed, fmt.Errorf("%s: %w", c.name, err)
				}
				saturate(ctx, c.call, 16, 300*time.Millisecond) // warm, as measure does
				sm, f := s.everydayRun(ctx, c)
				got[c.name], failed = sm, failed+f
			}
			for i, r := range p.ratios {
				out[first+i].values = append(out[first+i].values, r.of(got[p.a], got[p.b]))
			}
			if err := ctx.Err(); err != nil {
				return nil, failed, err
			}
		}
	}
	if c, ok := byName[grpcConfig]; ok && len(out) > 0 {
		if err := c.setup(); err != nil {
			return nil, failed, fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return out, failed, nil
}

// alternatedMarkdown is the table of alternated ratios.
func alternatedMarkdown(as []alternated, rounds, failed int) string {
	if len(as) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n#16's ratios measured in alternation at %d req/s, rounds: %d, each round the two configurations back to back (a, b, then b, a), each value the ratio within one round; requests failed: %d.\n\n", everyday, rounds, failed)
	b.WriteString("| ratio | target | median | lowest | highest | rounds within the target |\n|---|---|---|---|---|---|\n")
	for _, a := range as {
		within := 0
		for _, v := range a.values {
			if v <= a.target {
				within++
			}
		}
		fmt.Fprintf(&b, "| %s | ≤ %.2f | **%.2f** | %.2f | %.2f | %d of %d |\n", a.what, a.target, median(a.values), slices.Min(a.values), slices.Max(a.values), within, len(a.values))
	}
	return b.String()
}
