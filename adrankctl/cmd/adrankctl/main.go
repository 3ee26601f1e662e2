// Command adrankctl is the command-line tool for teams using adrank.
//
//	adrankctl score --model FILE [--input rows.jsonl]
//
// scores feature rows offline with a model file, as a ranker would: one JSON
// object per input line (feature name to number; null or absent means
// missing), one score per output line. It is how a team checks a model file
// before registering it.
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
  score --model FILE [--input rows.jsonl]   score JSON-lines feature rows with a model file
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

func run(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "score":
		return runScore(args[1:], stdin, stdout, stderr)
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
