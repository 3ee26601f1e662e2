package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/tlsx"
)

// loadTimeout bounds a snapshot upload, validation and swap.
const loadTimeout = 10 * time.Minute

// chunkBytes is the size of each uploaded message.
const chunkBytes = 1 << 20

// featuresFlags are the flags of the features commands: which featuresvc
// instances to call.
type featuresFlags struct {
	addr   string
	consul string
	output string
	token  string
	tls    tlsx.Config
}

func (f *featuresFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "features", "", "one featuresvc gRPC address; default: every healthy instance registered in Consul")
	fs.StringVar(&f.consul, "consul-addr", os.Getenv("CONSUL_HTTP_ADDR"), "Consul agent HTTP address, to find the instances")
	fs.StringVar(&f.output, "output", "table", "table or json")
	fs.StringVar(&f.token, "token", os.Getenv("ADRANK_TOKEN"), "bearer token (default $ADRANK_TOKEN), for a featuresvc started with --tokens: loads need the admin role")
	f.tls.RegisterClient(fs)
}

// instances are the featuresvc addresses to call: each embedded store is
// its own, so a snapshot is loaded into every instance (a shared store, see
// loadTargets, once).
func (f *featuresFlags) instances() ([]string, error) {
	if f.addr != "" {
		return []string{f.addr}, nil
	}
	client, err := consulx.NewClient(f.consul)
	if err != nil {
		return nil, err
	}
	entries, _, err := client.Health().Service(consulx.FeatureService, "", true, nil)
	if err != nil {
		return nil, fmt.Errorf("finding featuresvc in Consul: %w", err)
	}
	var out []string
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		out = append(out, fmt.Sprintf("%s:%d", addr, e.Service.Port))
	}
	if len(out) == 0 {
		return nil, errors.New("no healthy featuresvc instance in Consul (or name one with --features)")
	}
	return out, nil
}

func (f *featuresFlags) each(ctx context.Context, call func(context.Context, string, featuresv1.FeatureServiceClient) error) error {
	addrs, err := f.instances()
	if err != nil {
		return err
	}
	return f.call(ctx, addrs, call)
}

// loadTargets are the instances to load a snapshot into: all of them, or
// the first alone when it says its store is shared.
func (f *featuresFlags) loadTargets(ctx context.Context) ([]string, error) {
	addrs, err := f.instances()
	if err != nil || len(addrs) == 1 {
		return addrs, err
	}
	shared := false
	err = f.call(ctx, addrs[:1], func(ctx context.Context, _ string, c featuresv1.FeatureServiceClient) error {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		st, err := c.GetFeatureStatus(ctx, &featuresv1.GetFeatureStatusRequest{})
		shared = err == nil && st.GetShared()
		return err
	})
	if err != nil {
		return nil, err
	}
	if shared {
		return addrs[:1], nil
	}
	return addrs, nil
}

// call calls each of addrs.
func (f *featuresFlags) call(ctx context.Context, addrs []string, call func(context.Context, string, featuresv1.FeatureServiceClient) error) error {
	creds, err := f.tls.DialOption()
	if err != nil {
		return err
	}
	var errs []error
	for _, addr := range addrs {
		cc, err := grpc.NewClient(addr, creds)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cctx := ctx
		if f.token != "" {
			cctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+f.token)
		}
		if err := call(cctx, addr, featuresv1.NewFeatureServiceClient(cc)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s", addr, status.Convert(err).Message()))
		}
		cc.Close()
	}
	return errors.Join(errs...)
}

func runFeatures(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: adrankctl features load|status|export ...")
	}
	if args[0] == "export" {
		return runExport(ctx, args[1:], stdout, stderr)
	}
	ff := &featuresFlags{}
	fs := flag.NewFlagSet("features "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	ff.register(fs)
	switch args[0] {
	case "load":
		entity := fs.String("entity", "", "the entity the file's rows are (user, ad, a cross) (required)")
		asOf := fs.String("as-of", "", "the time the rows describe (RFC 3339); default: when loaded")
		format := fs.String("format", "", "csv or parquet; default: from the file's extension")
		pos, err := parseArgs(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 || *entity == "" {
			return errors.New("usage: adrankctl features load --entity E FILE.parquet|FILE.csv")
		}
		return loadSnapshot(ctx, ff, *entity, pos[0], *format, *asOf, stdout)
	case "status":
		if _, err := parseArgs(fs, args[1:]); err != nil {
			return err
		}
		return ff.each(ctx, func(ctx context.Context, addr string, c featuresv1.FeatureServiceClient) error {
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			resp, err := c.GetFeatureStatus(ctx, &featuresv1.GetFeatureStatusRequest{})
			if err != nil {
				return err
			}
			if ff.output == "json" {
				return printJSON(stdout, resp)
			}
			fmt.Fprintf(stdout, "%s\n", addr)
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ENTITY\tVERSION\tROWS\tONLINE ROWS\tCOUNTER KEYS\tAS OF\tAGE\tSOURCE")
			for _, e := range resp.GetEntities() {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", e.GetEntity(), e.GetVersion(), e.GetRows(), e.GetOnlineRows(), e.GetCounterKeys(),
					e.GetAsOf().AsTime().Format(time.RFC3339), (time.Duration(e.GetAgeSeconds()) * time.Second).String(), e.GetSource())
			}
			return tw.Flush()
		})
	default:
		return fmt.Errorf("unknown features command %q: want load, status or export", args[0])
	}
}

func loadSnapshot(ctx context.Context, ff *featuresFlags, entity, path, format, asOf string, stdout io.Writer) error {
	if format == "" {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".parquet":
			format = "parquet"
		case ".csv":
			format = "csv"
		default:
			return fmt.Errorf("%s: say --format csv or parquet", path)
		}
	}
	header := &featuresv1.LoadSnapshotHeader{Entity: entity, Format: format, Source: filepath.Base(path)}
	if asOf != "" {
		t, err := time.Parse(time.RFC3339, asOf)
		if err != nil {
			return fmt.Errorf("--as-of: %w", err)
		}
		header.AsOf = timestamppb.New(t)
	}
	targets, err := ff.loadTargets(ctx)
	if err != nil {
		return err
	}
	return ff.call(ctx, targets, func(ctx context.Context, addr string, c featuresv1.FeatureServiceClient) error {
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		defer file.Close()
		ctx, cancel := context.WithTimeout(ctx, loadTimeout)
		defer cancel()
		stream, err := c.LoadSnapshot(ctx)
		if err != nil {
			return err
		}
		buf := make([]byte, chunkBytes)
		msg := &featuresv1.LoadSnapshotRequest{Header: header}
		for {
			n, rerr := io.ReadFull(file, buf)
			msg.Data = buf[:n]
			if err := stream.Send(msg); err != nil {
				break // the server's answer says why
			}
			msg = &featuresv1.LoadSnapshotRequest{}
			if rerr != nil {
				if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
					break
				}
				return rerr
			}
		}
		resp, err := stream.CloseAndRecv()
		if err != nil {
			return err
		}
		st := resp.GetStatus()
		if ff.output == "json" {
			return printJSON(stdout, resp)
		}
		fmt.Fprintf(stdout, "%s: entity %s now serves version %d (%d rows, from %s)\n", addr, st.GetEntity(), st.GetVersion(), st.GetRows(), st.GetSource())
		return nil
	})
}
