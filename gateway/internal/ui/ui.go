// Package ui is the dashboard the gateway serves at /ui/: the domains,
// their versions and instances, the live split, config errors, and each
// experiment's report as charts over time (CTR per arm with its confidence
// interval, bandit allocation, the canary's steps and guardrail, the
// shadows' PSI and top-k overlap).
//
// The page reads the REST API for the current state and /ui/api/history/
// for the past: a sampler reads every domain's report every Sample and
// keeps the last Keep samples per domain in memory (a restarted gateway
// starts its charts over; Prometheus and the Grafana dashboard keep the long
// history). Charts are drawn with uPlot (MIT), vendored under web/vendor
// from npm (make vendor-ui): no CDN, since there is no network at run time.
package ui

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

//go:embed web
var web embed.FS

// Options shape the dashboard.
type Options struct {
	// Sample is how often every domain's report is read (default 10s).
	Sample time.Duration
	// Keep is how many samples a domain keeps (default 720: 2 h at 10 s).
	Keep int
	// Timeout bounds each call to the router (default 2s).
	Timeout time.Duration
	Log     *slog.Logger
}

// UI samples reports and serves the dashboard. Run owns the sampler.
type UI struct {
	router routerv1.RouterServiceClient
	o      Options

	mu      sync.Mutex
	history map[string][]Point
}

// New returns the dashboard over the router client.
func New(router routerv1.RouterServiceClient, o Options) *UI {
	if o.Sample <= 0 {
		o.Sample = 10 * time.Second
	}
	if o.Keep <= 0 {
		o.Keep = 720
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	return &UI{router: router, o: o, history: map[string][]Point{}}
}

// Point is one sample of a domain's report: what the charts draw.
type Point struct {
	At         int64        `json:"t"` // Unix milliseconds
	Experiment string       `json:"experiment"`
	Arms       []Arm        `json:"arms,omitempty"`
	Bandit     []BanditArm  `json:"bandit,omitempty"`
	Canary     *Canary      `json:"canary,omitempty"`
	Interleave *Interleave  `json:"interleave,omitempty"`
	Shadow     []ShadowStat `json:"shadow,omitempty"`
}

// Arm is an A/B arm's counts (the page computes CTR and its interval).
type Arm struct {
	Version     string  `json:"version"`
	Impressions float64 `json:"impressions"`
	Clicks      float64 `json:"clicks"`
}

// BanditArm is a bandit arm's share and mean.
type BanditArm struct {
	Version    string  `json:"version"`
	Allocation float64 `json:"allocation"`
	Mean       float64 `json:"mean"`
}

// Canary is the canary's state, step and guardrail.
type Canary struct {
	Version  string  `json:"version"`
	State    string  `json:"state"`
	Step     int32   `json:"step"`
	Share    float64 `json:"share"`
	CTRP     float64 `json:"ctr_p"`
	Canary   Arm     `json:"canary"`
	Control  Arm     `json:"control"`
	Reason   string  `json:"reason,omitempty"`
	Finished bool    `json:"finished"`
}

// Interleave is the interleaving duel's tally.
type Interleave struct {
	A     string  `json:"a"`
	B     string  `json:"b"`
	WinsA float64 `json:"wins_a"`
	WinsB float64 `json:"wins_b"`
	Ties  float64 `json:"ties"`
	P     float64 `json:"p"`
}

// ShadowStat is one shadow version's comparison with production.
type ShadowStat struct {
	Version string  `json:"version"`
	PSI     float64 `json:"psi"`
	TopK    float64 `json:"topk_overlap"`
	Tau     float64 `json:"kendall_tau"`
}

func point(at time.Time, r *routerv1.GetExperimentReportResponse) Point {
	p := Point{At: at.UnixMilli(), Experiment: r.GetExperimentId()}
	for _, a := range r.GetAb().GetArms() {
		p.Arms = append(p.Arms, Arm{Version: a.GetVersion(), Impressions: a.GetImpressions(), Clicks: a.GetClicks()})
	}
	for _, a := range r.GetBandit().GetArms() {
		p.Bandit = append(p.Bandit, BanditArm{Version: a.GetVersion(), Allocation: a.GetAllocation(), Mean: a.GetMean()})
	}
	if c := r.GetCanary(); c != nil {
		arm := func(g *routerv1.GroupStats) Arm {
			return Arm{Version: g.GetVersion(), Impressions: g.GetImpressions(), Clicks: g.GetClicks()}
		}
		p.Canary = &Canary{Version: c.GetVersion(), State: c.GetState(), Step: c.GetStep(), Share: c.GetSharePercent(), CTRP: c.GetCtrPValue(),
			Canary: arm(c.GetCanary()), Control: arm(c.GetControl()), Reason: c.GetReason(), Finished: c.GetState() != "running"}
	}
	if in := r.GetInterleave(); in != nil {
		p.Interleave = &Interleave{A: in.GetA(), B: in.GetB(), WinsA: in.GetWinsA(), WinsB: in.GetWinsB(), Ties: in.GetTies(), P: in.GetAlwaysValidPValue()}
	}
	for _, s := range r.GetShadow() {
		p.Shadow = append(p.Shadow, ShadowStat{Version: s.GetVersion(), PSI: s.GetPsi(), TopK: s.GetTopkOverlap(), Tau: s.GetKendallTau()})
	}
	return p
}

// Run samples every domain's report every Sample until ctx ends.
func (u *UI) Run(ctx context.Context) error {
	t := time.NewTicker(u.o.Sample)
	defer t.Stop()
	for {
		u.sample(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (u *UI) sample(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, u.o.Timeout)
	defer cancel()
	domains, err := u.router.ListDomains(cctx, &routerv1.ListDomainsRequest{})
	if err != nil {
		if ctx.Err() == nil && u.o.Log != nil {
			u.o.Log.Debug("dashboard sample: no domains", "error", err)
		}
		return
	}
	now := time.Now()
	for _, d := range domains.GetDomains() {
		r, err := u.router.GetExperimentReport(cctx, &routerv1.GetExperimentReportRequest{Domain: d.GetDomain()})
		if err != nil {
			continue
		}
		p := point(now, r)
		u.mu.Lock()
		h := u.history[d.GetDomain()]
		if len(h) > 0 && h[len(h)-1].Experiment != p.Experiment {
			h = nil // another experiment: its own chart
		}
		h = append(h, p)
		if over := len(h) - u.o.Keep; over > 0 {
			h = append(h[:0:0], h[over:]...)
		}
		u.history[d.GetDomain()] = h
		u.mu.Unlock()
	}
}

// History returns a domain's samples, oldest first.
func (u *UI) History(domain string) []Point {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Point(nil), u.history[domain]...)
}

// Handler serves the page at /ui/ and the history at
// /ui/api/history/{domain}.
func (u *UI) Handler() http.Handler {
	static, _ := fs.Sub(web, "web") // the embedded folder is there
	files := http.StripPrefix("/ui/", http.FileServerFS(static))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/api/history/{domain}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]any{"domain": r.PathValue("domain"), "sample_ms": u.o.Sample.Milliseconds(), "points": u.History(r.PathValue("domain"))})
	})
	mux.HandleFunc("GET /ui/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/ui/vendor/") {
			w.Header().Set("Cache-Control", "public, max-age=86400")
		}
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusMovedPermanently) })
	return mux
}
