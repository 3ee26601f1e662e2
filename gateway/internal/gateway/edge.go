package gateway

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/status"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/assign"
	"github.com/adrank/adrank/platform/edgebundle"
)

// web holds the edge client (adrank-edge.js) and its demo page, served at
// /edge/.
//
//go:embed web
var web embed.FS

// edge serves edge bundles from a folder of them (adrankctl edge build
// --out): the manifest a device polls, and the bundles' files, which are
// content-addressed and so cached for good.
type edge struct {
	dir    string
	router routerv1.RouterServiceClient
	mu     sync.Mutex
	// bundles caches each bundle read (and checked) from dir, by folder;
	// a folder's bundle.json changing is seen by its modification time.
	bundles map[string]cachedBundle
}

type cachedBundle struct {
	mod time.Time
	m   edgebundle.Manifest
	err error
}

// bundle reads (once per change) and checks the bundle of domain/version.
func (e *edge) bundle(domain, version string) (edgebundle.Manifest, error) {
	dir := filepath.Join(e.dir, domain, version)
	st, err := os.Stat(filepath.Join(dir, "bundle.json"))
	if err != nil {
		return edgebundle.Manifest{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.bundles[dir]; ok && c.mod.Equal(st.ModTime()) {
		return c.m, c.err
	}
	m, err := edgebundle.Read(dir)
	if err == nil && (m.Domain != domain || m.Version != version) {
		err = errors.New(dir + ": the manifest is of another domain or version")
	}
	e.bundles[dir] = cachedBundle{mod: st.ModTime(), m: m, err: err}
	return m, err
}

// EdgeManifest is what GET /v1/edge/{domain}/manifest answers.
type EdgeManifest struct {
	Domain string      `json:"domain"`
	Plan   assign.Plan `json:"plan"`
	// Auction is the domain's auction config document ({} for none).
	Auction json.RawMessage `json:"auction"`
	// Bundles are the bundles of the versions the plan can assign.
	Bundles map[string]EdgeBundle `json:"bundles"`
	// Missing names the versions the plan can assign that have no bundle
	// (or one of another model than the router serves): devices assigned
	// them use production's.
	Missing []string `json:"missing,omitempty"`
}

// EdgeBundle is one version's bundle in a manifest.
type EdgeBundle struct {
	Version      string              `json:"version"`
	ModelSHA256  string              `json:"model_sha256"`
	BundleSHA256 string              `json:"bundle_sha256"`
	Files        map[string]EdgeFile `json:"files"`
}

// EdgeFile is one file of a bundle, where to get it and how to check it.
type EdgeFile struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

func (e *edge) manifest(w http.ResponseWriter, r *http.Request, p map[string]string) {
	domain := p["domain"]
	plan, err := e.router.GetEdgePlan(r.Context(), &routerv1.GetEdgePlanRequest{Domain: domain})
	if err != nil {
		writeStatus(w, err)
		return
	}
	m := EdgeManifest{Domain: domain, Auction: json.RawMessage("{}"), Bundles: map[string]EdgeBundle{},
		Plan: assign.Plan{Domain: domain, Production: plan.GetProductionVersion(), Experiment: plan.GetExperimentId()}}
	if c := plan.GetAuctionConfig(); c != "" {
		m.Auction = json.RawMessage(c)
	}
	if ab := plan.GetAb(); ab != nil {
		m.Plan.AB = &assign.ABPlan{Salt: ab.GetSalt()}
		for _, a := range ab.GetArms() {
			m.Plan.AB.Arms = append(m.Plan.AB.Arms, assign.Arm{Version: a.GetVersion(), Weight: a.GetWeight()})
		}
	}
	if c := plan.GetCanary(); c != nil {
		m.Plan.Canary = &assign.CanaryPlan{Version: c.GetVersion(), SharePercent: c.GetSharePercent(), InternalUsers: c.GetInternalUsers(), RolledBack: c.GetRolledBack()}
	}
	versions := []string{m.Plan.Production}
	if m.Plan.AB != nil {
		for _, a := range m.Plan.AB.Arms {
			versions = append(versions, a.Version)
		}
	}
	if m.Plan.Canary != nil {
		versions = append(versions, m.Plan.Canary.Version)
	}
	slices.Sort(versions)
	for _, v := range slices.Compact(versions) {
		b, err := e.bundle(domain, v)
		if err != nil || b.ModelSHA256 != plan.GetModelSha256()[v] {
			m.Missing = append(m.Missing, v)
			continue
		}
		eb := EdgeBundle{Version: v, ModelSHA256: b.ModelSHA256, BundleSHA256: b.BundleSHA256, Files: map[string]EdgeFile{}}
		for n, f := range b.Files {
			eb.Files[n] = EdgeFile{URL: "/v1/edge/" + domain + "/bundles/" + v + "/" + b.BundleSHA256 + "/" + n, SHA256: f.SHA256, Size: f.Size}
		}
		m.Bundles[v] = eb
	}
	body, err := json.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// Devices poll it: revalidate every time, download only on change.
	w.Header().Set("Cache-Control", "no-cache")
	serveTagged(w, r, "application/json", body, edgebundle.Sum(body))
}

// file serves one bundle file; its URL names the bundle's sha256, so it
// never changes and may be cached for good.
func (e *edge) file(w http.ResponseWriter, r *http.Request, p map[string]string) {
	b, err := e.bundle(p["domain"], p["version"])
	f, ok := b.Files[p["file"]]
	if err != nil || !ok || b.BundleSHA256 != p["bundle"] {
		writeJSONError(w, http.StatusNotFound, "no such bundle file (a newer bundle replaced it? fetch the manifest again)")
		return
	}
	data, err := os.ReadFile(filepath.Join(e.dir, p["domain"], p["version"], p["file"]))
	if err != nil || edgebundle.Sum(data) != f.SHA256 {
		writeJSONError(w, http.StatusNotFound, "bundle file changed on disk; fetch the manifest again")
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	ctype := mime.TypeByExtension(filepath.Ext(p["file"]))
	if strings.HasSuffix(p["file"], ".wasm") {
		ctype = "application/wasm"
	}
	serveTagged(w, r, ctype, data, f.SHA256)
}

// serveTagged serves body with a strong ETag, or 304 when the client has it.
func serveTagged(w http.ResponseWriter, r *http.Request, ctype string, body []byte, sum string) {
	tag := `"` + sum + `"`
	w.Header().Set("ETag", tag)
	if inm := r.Header.Get("If-None-Match"); inm != "" && slices.Contains(strings.Split(strings.ReplaceAll(inm, " ", ""), ","), tag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", ctype)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

func writeStatus(w http.ResponseWriter, err error) {
	code := runtime.HTTPStatusFromCode(status.Code(err))
	writeJSONError(w, code, status.Convert(err).Message())
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
}

// registerEdge adds the edge routes to mux.
func registerEdge(mux *runtime.ServeMux, dir string, router routerv1.RouterServiceClient) error {
	handle := func(method, path string, h runtime.HandlerFunc) error { return mux.HandlePath(method, path, h) }
	static, err := fs.Sub(web, "web")
	if err != nil {
		return err
	}
	files := http.StripPrefix("/edge/", http.FileServerFS(static))
	if err := handle(http.MethodGet, "/edge/{file}", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		files.ServeHTTP(w, r)
	}); err != nil {
		return err
	}
	if dir == "" {
		return nil
	}
	e := &edge{dir: dir, router: router, bundles: map[string]cachedBundle{}}
	if err := handle(http.MethodGet, "/v1/edge/{domain}/manifest", e.manifest); err != nil {
		return err
	}
	return handle(http.MethodGet, "/v1/edge/{domain}/bundles/{version}/{bundle}/{file}", e.file)
}
