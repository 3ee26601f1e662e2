package ui

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

// fakeRouter answers one domain's report, whose experiment the test sets.
type fakeRouter struct {
	routerv1.UnimplementedRouterServiceServer
	mu         sync.Mutex
	experiment string
	clicks     float64
}

func (f *fakeRouter) ListDomains(context.Context, *routerv1.ListDomainsRequest) (*routerv1.ListDomainsResponse, error) {
	return &routerv1.ListDomainsResponse{Domains: []*routerv1.DomainInfo{{Domain: "feed", ProductionVersion: "v1"}}}, nil
}

func (f *fakeRouter) GetExperimentReport(context.Context, *routerv1.GetExperimentReportRequest) (*routerv1.GetExperimentReportResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clicks++
	return &routerv1.GetExperimentReportResponse{Domain: "feed", ExperimentId: f.experiment, Ab: &routerv1.ABReport{Arms: []*routerv1.GroupStats{
		{Version: "v1", Impressions: 100, Clicks: f.clicks}, {Version: "v2", Impressions: 100, Clicks: 2 * f.clicks}}}}, nil
}

func client(t *testing.T, f *fakeRouter) routerv1.RouterServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	routerv1.RegisterRouterServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); srv.Stop() })
	return routerv1.NewRouterServiceClient(cc)
}

func TestHistory(t *testing.T) {
	f := &fakeRouter{experiment: "ab:s:v1,v2"}
	u := New(client(t, f), Options{Keep: 3})
	ctx := context.Background()
	for range 5 {
		u.sample(ctx)
	}
	h := u.History("feed")
	if len(h) != 3 || h[0].Arms[0].Clicks != 3 || h[2].Arms[1].Clicks != 10 {
		t.Fatalf("kept %+v, want the last 3 samples", h)
	}
	// Another experiment starts its own history.
	f.mu.Lock()
	f.experiment = "ab:t:v1,v2"
	f.mu.Unlock()
	u.sample(ctx)
	if h := u.History("feed"); len(h) != 1 || h[0].Experiment != "ab:t:v1,v2" {
		t.Fatalf("after the experiment changed: %+v", h)
	}

	srv := httptest.NewServer(u.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/ui/api/history/feed")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Domain string  `json:"domain"`
		Points []Point `json:"points"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got.Domain != "feed" || len(got.Points) != 1 {
		t.Fatalf("history JSON %+v, %v", got, err)
	}
	resp.Body.Close()
	for path, want := range map[string]string{"/ui/": "<title>adrank</title>", "/ui/app.js": "adrankUI", "/ui/vendor/uPlot.iife.min.js": "uPlot"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b := new(strings.Builder)
		_, _ = io.Copy(b, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), want) {
			t.Errorf("%s: %d, want it to hold %q", path, resp.StatusCode, want)
		}
	}
}
