package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/adrank/adrank/adrankctl/internal/experimentctl"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consulx"
)

// callTimeout bounds every call adrankctl makes.
const callTimeout = 10 * time.Second

// parseArgs parses flags that may come before or after the positional
// arguments, and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runExperiment(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("experiment", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("consul-addr", os.Getenv("CONSUL_HTTP_ADDR"), "Consul agent HTTP address (Consul's CONSUL_HTTP_TOKEN and TLS variables apply)")
	output := fs.String("output", "table", "table or json")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 || len(pos) > 3 {
		return errors.New("usage: adrankctl experiment get|set|validate DOMAIN [FILE]")
	}
	verb, domain := pos[0], pos[1]
	if *output != "table" && *output != "json" {
		return fmt.Errorf("--output %q: want table or json", *output)
	}
	say := func(text string, fields map[string]any) error {
		if *output == "json" {
			return json.NewEncoder(stdout).Encode(fields)
		}
		_, err := fmt.Fprintln(stdout, text)
		return err
	}
	client, err := consulx.NewClient(*addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	readDoc := func() ([]byte, error) {
		if len(pos) == 3 && pos[2] != "-" {
			return os.ReadFile(pos[2])
		}
		return io.ReadAll(stdin)
	}
	switch verb {
	case "get":
		doc, err := experimentctl.Get(ctx, client, domain)
		if err != nil {
			return err
		}
		if *output == "json" {
			return say("", map[string]any{"domain": domain, "experiment": json.RawMessage(doc)})
		}
		_, err = fmt.Fprintf(stdout, "%s\n", doc)
		return err
	case "validate", "set":
		doc, err := readDoc()
		if err != nil {
			return err
		}
		if verb == "validate" {
			if err := experimentctl.Validate(ctx, client, domain, doc); err != nil {
				return fmt.Errorf("invalid: %w", err)
			}
			return say("valid for domain "+domain, map[string]any{"domain": domain, "valid": true})
		}
		if err := experimentctl.Set(ctx, client, domain, doc); err != nil {
			return err
		}
		return say("written to adrank/experiments/"+domain, map[string]any{"domain": domain, "written": "adrank/experiments/" + domain})
	default:
		return fmt.Errorf("unknown experiment command %q: want get, set or validate", verb)
	}
}

func runCanary(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var reason *string
	rf, pos, err := routerCommand("canary", args, stderr, func(fs *flag.FlagSet) { reason = fs.String("reason", "", "why (rollback)") })
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("usage: adrankctl canary promote|rollback DOMAIN [--reason TEXT] [--router ADDR]")
	}
	client, ctx, done, err := rf.dial(ctx)
	if err != nil {
		return err
	}
	defer done()
	switch pos[0] {
	case "promote":
		resp, err := client.PromoteCanary(ctx, &routerv1.PromoteCanaryRequest{Domain: pos[1]})
		if err != nil {
			return err
		}
		if rf.output == "json" {
			return printJSON(stdout, resp)
		}
		_, err = fmt.Fprintf(stdout, "%s: production is now %s\n", pos[1], resp.GetProductionVersion())
		return err
	case "rollback":
		resp, err := client.RollbackCanary(ctx, &routerv1.RollbackCanaryRequest{Domain: pos[1], Reason: *reason})
		if err != nil {
			return err
		}
		if rf.output == "json" {
			return printJSON(stdout, resp)
		}
		_, err = fmt.Fprintf(stdout, "%s: canary rolled back\n", pos[1])
		return err
	default:
		return fmt.Errorf("unknown canary command %q: want promote or rollback", pos[0])
	}
}
