// Command gateway is adrank's REST edge: it finds the router through Consul
// (or --router-addr) and serves /v1/rank, /v1/domains, /healthz and
// /openapi.json.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/adrank/adrank/gateway/internal/gateway"
	"github.com/adrank/adrank/gateway/internal/ui"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/debugsrv"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/grpcx"
	"github.com/adrank/adrank/platform/metrics"
	"github.com/adrank/adrank/platform/service"
	"github.com/adrank/adrank/platform/tracing"
)

type options struct {
	service.Flags
	routerAddr   string
	featuresAddr string
	timeout      time.Duration
	maxBody      int64
	edgeDir      string
	uiSample     time.Duration
	uiKeep       int
}

func main() {
	var o options
	fs := flag.NewFlagSet("gateway", flag.ExitOnError)
	o.Register(fs, "127.0.0.1:8080")
	fs.StringVar(&o.routerAddr, "router-addr", "", "router gRPC address; empty: discover adrank-router in Consul")
	fs.StringVar(&o.featuresAddr, "features-addr", "", "featuresvc gRPC address, for /v1/features; empty: discover adrank-feature in Consul (none with --router-addr)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Second, "deadline of each REST call")
	fs.Int64Var(&o.maxBody, "max-body", 1<<20, "largest request body in bytes; larger ones get 413")
	fs.DurationVar(&o.uiSample, "ui-sample", 10*time.Second, "how often the dashboard (/ui/) samples every domain's report for its charts")
	fs.IntVar(&o.uiKeep, "ui-keep", 720, "samples the dashboard keeps per domain (in memory)")
	fs.StringVar(&o.edgeDir, "edge-dir", "", "folder of edge bundles (adrankctl edge build --out) to serve at /v1/edge/; empty: none")
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	log := o.Setup("gateway")
	g, gctx := errgroup.WithContext(ctx)
	res := discovery.NewResolver()
	target := discovery.Target(consulx.RouterService)
	// Each service's healthy instances, from Consul unless an address is
	// given.
	watch := func(client *api.Client, service string) {
		g.Go(func() error {
			discovery.WatchService(gctx, client, log, service, func(insts []discovery.Instance) {
				var addrs []string
				for _, in := range insts {
					if in.Healthy {
						addrs = append(addrs, in.Addr)
					}
				}
				res.Update(service, addrs)
			})
			return nil
		})
	}
	var client *api.Client
	if o.routerAddr == "" || o.featuresAddr == "" {
		var err error
		if client, err = consulx.NewClient(o.ConsulAddr); err != nil {
			return err
		}
	}
	if o.routerAddr != "" {
		res.Update(consulx.RouterService, []string{o.routerAddr})
	} else {
		watch(client, consulx.RouterService)
	}
	features := o.featuresAddr != "" || o.routerAddr == ""
	if o.featuresAddr != "" {
		res.Update(consulx.FeatureService, []string{o.featuresAddr})
	} else if features {
		watch(client, consulx.FeatureService)
	}
	tlsDial, err := o.TLS.DialOption()
	if err != nil {
		return err
	}
	serverTLS, err := o.TLS.ServerConfig()
	if err != nil {
		return err
	}
	tr, err := tracing.New(ctx, "gateway")
	if err != nil {
		return err
	}
	defer func() { // the spans of the last requests
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := tr.Shutdown(sctx); err != nil {
			log.Warn("trace export at shutdown failed", "error", err)
		}
	}()
	dial := []grpc.DialOption{grpc.WithResolvers(res), tlsDial, tr.DialOption()}
	var m *metrics.Metrics
	if o.MetricsAddr != "" {
		m = metrics.New()
		dial = append(dial, m.DialOptions()...)
	}
	cc, err := grpc.NewClient(target, grpcx.ClientOptions(dial...)...)
	if err != nil {
		return fmt.Errorf("dial router: %w", err)
	}
	defer cc.Close()
	gopts := gateway.Options{Timeout: o.timeout, MaxBody: o.maxBody, Log: log, EdgeDir: o.edgeDir}
	if features {
		fc, err := grpc.NewClient(discovery.Target(consulx.FeatureService), grpcx.ClientOptions(dial...)...)
		if err != nil {
			return fmt.Errorf("dial featuresvc: %w", err)
		}
		defer fc.Close()
		gopts.Features = fc
	}
	h, err := gateway.NewHandler(gctx, cc, gopts)
	if err != nil {
		return err
	}
	dash := ui.New(routerv1.NewRouterServiceClient(cc), ui.Options{Sample: o.uiSample, Keep: o.uiKeep, Timeout: o.timeout, Log: log})
	g.Go(func() error { return dash.Run(gctx) })
	top := http.NewServeMux()
	dashboard := dash.Handler()
	top.Handle("/ui/", dashboard)
	top.Handle("/ui", dashboard)
	top.Handle("/", h)
	h = tr.Handler(top, "gateway")
	if m != nil {
		h = instrument(m, h)
		g.Go(func() error { return metrics.Run(gctx, o.MetricsAddr, m, log) })
	}
	lis, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// A request has its headers within 5 s and its whole body within 10 s:
	// a slow body cannot hold a connection for long.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		TLSConfig: serverTLS}
	g.Go(func() error {
		log.Info("serving REST", "addr", lis.Addr().String(), "tls", serverTLS != nil)
		serve := srv.Serve
		if serverTLS != nil { // HTTPS only; the certificate comes from TLSConfig
			serve = func(l net.Listener) error { return srv.ServeTLS(l, "", "") }
		}
		if err := serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return debugsrv.Run(gctx, o.DebugAddr, log) })
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down: draining", "grace", o.Grace.String())
		sctx, cancel := context.WithTimeout(context.Background(), o.Grace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("grace period over; closing", "error", err)
			return srv.Close()
		}
		return nil
	})
	return g.Wait()
}

// instrument counts and times every REST request by method and status code
// (adrank_http_requests_total, adrank_http_request_duration_seconds).
func instrument(m *metrics.Metrics, h http.Handler) http.Handler {
	total := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "adrank_http_requests_total", Help: "REST requests, by method and status code."}, []string{"method", "code"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "adrank_http_request_duration_seconds", Help: "REST request latency, by method and status code.",
		Buckets: metrics.Buckets}, []string{"method", "code"})
	m.Reg.MustRegister(total, dur)
	return promhttp.InstrumentHandlerCounter(total, promhttp.InstrumentHandlerDuration(dur, h))
}
