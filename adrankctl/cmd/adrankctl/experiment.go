package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/adrank/adrank/adrankctl/internal/experimentctl"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/tlsx"
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
	addr := fs.String("consul-addr", os.Getenv("CONSUL_HTTP_ADDR"), "Consul agent HTTP address")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 || len(pos) > 3 {
		return errors.New("usage: adrankctl experiment get|set|validate DOMAIN [FILE]")
	}
	verb, domain := pos[0], pos[1]
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
			_, err = fmt.Fprintf(stdout, "valid for domain %s\n", domain)
			return err
		}
		if err := experimentctl.Set(ctx, client, domain, doc); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "written to adrank/experiments/%s\n", domain)
		return err
	default:
		return fmt.Errorf("unknown experiment command %q: want get, set or validate", verb)
	}
}

func runCanary(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("canary", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("router", "127.0.0.1:9090", "router gRPC address")
	reason := fs.String("reason", "", "why (rollback)")
	token := fs.String("token", os.Getenv("ADRANK_TOKEN"), "admin bearer token (default $ADRANK_TOKEN), for a router started with --tokens")
	var tc tlsx.Config
	tc.RegisterClient(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("usage: adrankctl canary promote|rollback DOMAIN [--reason TEXT] [--router ADDR]")
	}
	creds, err := tc.DialOption()
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(*addr, creds)
	if err != nil {
		return err
	}
	defer cc.Close()
	client := routerv1.NewRouterServiceClient(cc)
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if *token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}
	switch pos[0] {
	case "promote":
		resp, err := client.PromoteCanary(ctx, &routerv1.PromoteCanaryRequest{Domain: pos[1]})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s: production is now %s\n", pos[1], resp.GetProductionVersion())
		return err
	case "rollback":
		if _, err := client.RollbackCanary(ctx, &routerv1.RollbackCanaryRequest{Domain: pos[1], Reason: *reason}); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s: canary rolled back\n", pos[1])
		return err
	default:
		return fmt.Errorf("unknown canary command %q: want promote or rollback", pos[0])
	}
}
