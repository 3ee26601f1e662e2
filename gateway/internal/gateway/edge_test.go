package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/edgebundle"
)

// planRouter answers GetEdgePlan with a fixed plan.
type planRouter struct {
	routerv1.RouterServiceClient
	plan *routerv1.GetEdgePlanResponse
}

func (p planRouter) GetEdgePlan(context.Context, *routerv1.GetEdgePlanRequest, ...grpc.CallOption) (*routerv1.GetEdgePlanResponse, error) {
	return p.plan, nil
}

func edgeServer(t *testing.T, plan *routerv1.GetEdgePlanResponse) (*httptest.Server, string, edgebundle.Manifest) {
	t.Helper()
	scorer, dir := t.TempDir(), t.TempDir()
	for n, body := range map[string]string{"scorer.wasm": "\x00asm fake scorer", "wasm_exec.js": "// glue"} {
		if err := os.WriteFile(filepath.Join(scorer, n), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	model := []byte(`{"format": "logreg"}`)
	m, err := edgebundle.Build(dir, "feed", "v1", edgebundle.Model{File: model, SHA256: edgebundle.Sum(model), Format: "logreg", Features: []string{"a"}}, scorer)
	if err != nil {
		t.Fatal(err)
	}
	if plan.ModelSha256 == nil {
		plan.ModelSha256 = map[string]string{"v1": m.ModelSHA256}
	}
	mux := runtime.NewServeMux()
	if err := registerEdge(mux, dir, planRouter{plan: plan}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, dir, m
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestEdgeManifestAndFiles(t *testing.T) {
	plan := &routerv1.GetEdgePlanResponse{Domain: "feed", ProductionVersion: "v1", ExperimentId: "x1",
		Ab:            &routerv1.EdgeAB{Salt: "s", Arms: []*routerv1.EdgeArm{{Version: "v1", Weight: 1}, {Version: "v2", Weight: 1}}},
		AuctionConfig: `{"type": "vcg"}`}
	srv, dir, built := edgeServer(t, plan)
	resp, body := get(t, srv.URL+"/v1/edge/feed/manifest")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("ETag") == "" {
		t.Fatalf("manifest: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	var m EdgeManifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	b := m.Bundles["v1"]
	if b.BundleSHA256 != built.BundleSHA256 || len(b.Files) != 4 || m.Plan.AB == nil || len(m.Missing) != 1 || m.Missing[0] != "v2" ||
		string(m.Auction) != `{"type":"vcg"}` {
		t.Fatalf("manifest %s", body)
	}
	// Unchanged: 304.
	if resp, _ := get(t, srv.URL+"/v1/edge/feed/manifest", "If-None-Match", resp.Header.Get("ETag")); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation: %d", resp.StatusCode)
	}
	// A file: its bytes, its sha256 as a strong ETag, cached for good.
	f := b.Files["scorer.wasm"]
	resp, data := get(t, srv.URL+f.URL)
	if resp.StatusCode != http.StatusOK || edgebundle.Sum(data) != f.SHA256 || resp.Header.Get("ETag") != `"`+f.SHA256+`"` ||
		resp.Header.Get("Content-Type") != "application/wasm" || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("file: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := get(t, srv.URL+f.URL, "If-None-Match", `"`+f.SHA256+`"`); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("file revalidation: %d", resp.StatusCode)
	}
	// Another bundle's address, or a file changed on disk: not served.
	if resp, _ := get(t, srv.URL+strings.Replace(f.URL, b.BundleSHA256, strings.Repeat("0", 64), 1)); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown bundle: %d", resp.StatusCode)
	}
	if err := os.WriteFile(filepath.Join(dir, "feed", "v1", "scorer.wasm"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, srv.URL+f.URL); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("tampered file: %d", resp.StatusCode)
	}
	// The client itself.
	if resp, js := get(t, srv.URL+"/edge/adrank-edge.js"); resp.StatusCode != http.StatusOK || !strings.Contains(string(js), "class AdrankEdge") {
		t.Fatalf("client: %d", resp.StatusCode)
	}
}

// A bundle of another model than the router serves for the version is not
// offered.
func TestEdgeManifestSkipsAnotherModel(t *testing.T) {
	plan := &routerv1.GetEdgePlanResponse{Domain: "feed", ProductionVersion: "v1", ModelSha256: map[string]string{"v1": strings.Repeat("ab", 32)}}
	srv, _, _ := edgeServer(t, plan)
	_, body := get(t, srv.URL+"/v1/edge/feed/manifest")
	var m EdgeManifest
	if err := json.Unmarshal(body, &m); err != nil || len(m.Bundles) != 0 || len(m.Missing) != 1 {
		t.Fatalf("manifest %s (%v)", body, err)
	}
}
