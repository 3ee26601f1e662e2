// Package edgebundle builds and reads edge bundles: what a device downloads
// to rank on its own. A bundle is a directory DIR/<domain>/<version>/ with
//
//	scorer.wasm    the project's scorer (edge/cmd/scorer, GOOS=js GOARCH=wasm)
//	wasm_exec.js   the Go runtime's JavaScript glue, from the Go that built it
//	model.json     the model file
//	features.json  the model's input features, in order (its spec)
//	bundle.json    the manifest: domain, version, model sha256, each file's
//	               sha256 and size, and the bundle's sha256 (over those)
package edgebundle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Manifest is a bundle's bundle.json.
type Manifest struct {
	Domain       string          `json:"domain"`
	Version      string          `json:"version"`
	ModelSHA256  string          `json:"model_sha256"`
	ModelFormat  string          `json:"model_format"`
	BundleSHA256 string          `json:"bundle_sha256"`
	Files        map[string]File `json:"files"`
}

// File is one file of a bundle.
type File struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Names of a bundle's files.
var Names = []string{"scorer.wasm", "wasm_exec.js", "model.json", "features.json"}

// Model is the model a bundle carries.
type Model struct {
	File     []byte   // the model file
	SHA256   string   // of File
	Format   string   // model.Model's Format()
	Features []string // its inputs, in order
}

// Build writes the bundle of m for domain/version under out, from the
// scorer build in scorerDir (scorer.wasm and wasm_exec.js), and returns its
// manifest.
func Build(out, domain, version string, m Model, scorerDir string) (Manifest, error) {
	spec, err := json.Marshal(m.Features)
	if err != nil {
		return Manifest{}, err
	}
	contents := map[string][]byte{"features.json": spec, "model.json": m.File}
	for _, n := range []string{"scorer.wasm", "wasm_exec.js"} {
		if contents[n], err = os.ReadFile(filepath.Join(scorerDir, n)); err != nil {
			return Manifest{}, fmt.Errorf("%w (make build writes the scorer to bin/edge/)", err)
		}
	}
	man := Manifest{Domain: domain, Version: version, ModelSHA256: m.SHA256, ModelFormat: m.Format, Files: map[string]File{}}
	for n, b := range contents {
		man.Files[n] = File{SHA256: Sum(b), Size: int64(len(b))}
	}
	man.BundleSHA256 = man.Digest()
	dir := filepath.Join(out, domain, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Manifest{}, err
	}
	for n, b := range contents {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			return Manifest{}, err
		}
	}
	b, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	// The manifest last: a bundle without one is incomplete, and ignored.
	return man, os.WriteFile(filepath.Join(dir, "bundle.json"), b, 0o644)
}

// Sum is the hex sha256 of b.
func Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Read reads the bundle in dir and checks it: every file there, with its
// size and sha256, and the bundle's sha256.
func Read(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, "bundle.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", dir, err)
	}
	for _, n := range Names {
		f, ok := m.Files[n]
		if !ok {
			return m, fmt.Errorf("%s: no %s in the manifest", dir, n)
		}
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return m, err
		}
		if int64(len(data)) != f.Size || Sum(data) != f.SHA256 {
			return m, fmt.Errorf("%s: %s does not match its manifest", dir, n)
		}
	}
	if m.Digest() != m.BundleSHA256 {
		return m, fmt.Errorf("%s: bundle_sha256 does not match its files", dir)
	}
	return m, nil
}

// Digest is the bundle's sha256: over its files' names and sha256s, in
// name order.
func (m Manifest) Digest() string {
	var b strings.Builder
	for _, n := range slices.Sorted(maps.Keys(m.Files)) {
		fmt.Fprintf(&b, "%s %s\n", n, m.Files[n].SHA256)
	}
	return Sum([]byte(b.String()))
}
