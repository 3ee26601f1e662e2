// Command adrankctl is the command-line tool for teams using adrank.
//
//	adrankctl score --model FILE [--input rows.jsonl]
//
// scores feature rows offline with a model file, as a ranker would: one JSON
// object per input line (feature name to number; null or absent means
// missing), one score per output line. It is how a team checks a model file
// before registering it.
//
//	adrankctl experiment get|set|validate DOMAIN [FILE]
//
// reads and writes a domain's experiment document in Consul KV
// (adrank/experiments/DOMAIN), validated as the router will validate it;
// --consul-addr or CONSUL_HTTP_ADDR name the agent.
//
//	adrankctl canary promote|rollback DOMAIN [--reason TEXT] --router ADDR
//
// promotes or rolls back the domain's canary through the router's API.
//
//	adrankctl versions [DOMAIN]
//	adrankctl report DOMAIN
//	adrankctl ope --domain DOMAIN --candidate VERSION
//
// show the domains and their versions, and a domain's experiment report, as
// tables for people or, with --output json, as the REST API's JSON.
//
//	adrankctl features load --entity user FILE.parquet|FILE.csv
//	adrankctl features status
//
// load a snapshot of an entity's features into featuresvc (every healthy
// instance in Consul, or --features ADDR), validated as a whole, and show
// what each instance serves.
//
//	adrankctl features export DOMAIN --out train.parquet|train.csv
//
// writes the domain's logged requests (its experiment's "explore") as
// training data: one row per shown ad, with the features it was ranked on
// as they were served then, and whether it was clicked.
//
//	adrankctl batch run --domain D --version V [--shard i/N] [--input FILE] [--every 24h]
//
// is the batch deployment's job: it scores every (user, eligible ad) pair of
// the domain with the model version, keeps each user's top K and writes them
// as a snapshot generation that routers serve in batch mode and fall back
// to. See adrankctl batch run -h.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/adrank/adrank/adrankctl/internal/score"
	"github.com/adrank/adrank/ml/model"
)

const usage = `usage: adrankctl <command> [flags]

commands:
  score --model FILE [--input rows.jsonl]          score JSON-lines feature rows with a model file
  experiment get DOMAIN                            print the domain's experiment document
  experiment validate DOMAIN [FILE]                check a document (FILE or stdin) as the router would
  experiment set DOMAIN [FILE]                     validate, then write the document to Consul KV
  canary promote|rollback DOMAIN [--reason TEXT]   through the router
  versions [DOMAIN]                                domains, versions, instances, models and config errors
  report DOMAIN                                    the domain's experiment report as tables
  ope --domain D --candidate V                     estimate V's first-slot CTR from production's logged requests

  batch run --domain D --version V [flags]         score every (user, ad) pair; write each user's top K as a snapshot
  edge build --domain D --version V               write the version's edge bundle (WebAssembly scorer, model, manifest)
  features load --entity E FILE [--as-of T]       validate a CSV or Parquet file and make it the entity's snapshot, in every featuresvc
  features status                                 each featuresvc's entities: snapshot version, rows, age, online rows
  features export DOMAIN --out FILE.parquet|.csv  the logged requests as training rows: features as served, and clicks
flags of experiment: --consul-addr (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500); Consul's own
  variables apply too (CONSUL_HTTP_TOKEN, CONSUL_HTTP_SSL, CONSUL_CACERT, ...)
flags of canary, versions, report and ope: --router ADDR (default 127.0.0.1:9090), --token (default $ADRANK_TOKEN),
  --output table|json, --tls-ca, --tls-server-name
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "adrankctl:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "score":
		return runScore(args[1:], stdin, stdout, stderr)
	case "experiment":
		return runExperiment(ctx, args[1:], stdin, stdout, stderr)
	case "canary":
		return runCanary(ctx, args[1:], stdout, stderr)
	case "versions":
		return runVersions(ctx, args[1:], stdout, stderr)
	case "report":
		return runReport(ctx, args[1:], stdout, stderr)
	case "ope":
		return runOPE(ctx, args[1:], stdout, stderr)
	case "batch":
		return runBatch(ctx, args[1:], stdout, stderr)
	case "edge":
		return runEdge(args[1:], stdout, stderr)
	case "features":
		return runFeatures(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func runScore(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("score", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelPath := fs.String("model", "", "model file (XGBoost JSON or adrank logreg JSON) (required)")
	input := fs.String("input", "-", "JSON-lines input file; - for standard input")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *modelPath == "" {
		return errors.New("score: --model is required")
	}
	f, err := model.Load(*modelPath)
	if err != nil {
		return err
	}
	in := stdin
	if *input != "-" {
		file, err := os.Open(*input)
		if err != nil {
			return err
		}
		defer file.Close()
		in = file
	}
	if _, err := score.Rows(f.Model, in, stdout); err != nil {
		return fmt.Errorf("score %s: %w", *input, err)
	}
	return nil
}
