package main

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"

	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/platform/edgebundle"
)

// runEdge is `adrankctl edge build`: it writes a domain version's edge
// bundle.
func runEdge(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "build" {
		return errors.New("usage: adrankctl edge build --domain D --version V [--model FILE] [--scorer bin/edge] [--out .data/edge]")
	}
	fs := flag.NewFlagSet("edge build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("domain", "", "domain (required)")
	version := fs.String("version", "", "model version (required)")
	modelPath := fs.String("model", "", "model file (default models/DOMAIN/VERSION.json)")
	scorer := fs.String("scorer", "bin/edge", "folder of the WebAssembly scorer build (scorer.wasm, wasm_exec.js; make build writes it)")
	out := fs.String("out", ".data/edge", "bundles folder (the gateway's --edge-dir)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *domain == "" || *version == "" {
		return errors.New("edge build: --domain and --version are required")
	}
	if *modelPath == "" {
		*modelPath = "models/" + *domain + "/" + *version + ".json"
	}
	f, err := model.Load(*modelPath)
	if err != nil {
		return err
	}
	file, err := os.ReadFile(*modelPath)
	if err != nil {
		return err
	}
	m, err := edgebundle.Build(*out, *domain, *version, edgebundle.Model{File: file, SHA256: f.SHA256, Format: f.Format(), Features: f.Features()}, *scorer)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(m)
}
