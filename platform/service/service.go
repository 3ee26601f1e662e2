// Package service runs one adrank gRPC service instance: listen, serve,
// register in Consul, and on shutdown go NOT_SERVING, deregister, drain and
// exit within a grace period.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/debugsrv"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/grpcx"
	"github.com/adrank/adrank/platform/metrics"
	"github.com/adrank/adrank/platform/tlsx"
	"github.com/adrank/adrank/platform/tracing"
)

// Options configure one instance.
type Options struct {
	Name   string // Consul service name, e.g. consulx.RankerService
	Listen string // host:port; port 0 picks a free one
	// Advertise is the address registered in Consul; empty: the listen
	// address (an unspecified host becomes loopback).
	Advertise  string
	ConsulAddr string // empty: CONSUL_HTTP_ADDR or the API default
	// Grace bounds the drain of in-flight requests on shutdown.
	Grace time.Duration
	Tags  []string
	Meta  map[string]string
	Log   *slog.Logger
	// DebugAddr serves /debug/pprof/ when not empty.
	DebugAddr string
	// ServerOptions are more options of the gRPC server (interceptors
	// after adrank's own, for instance).
	ServerOptions []grpc.ServerOption
	// TLS: with a certificate, the server serves TLS only, and Consul's
	// health check speaks TLS to it.
	TLS tlsx.Config
	// Metrics, when not nil, counts and times every call, and is served at
	// /metrics on MetricsAddr.
	Metrics     *metrics.Metrics
	MetricsAddr string
	// Tracing traces every call (exporting when OTEL_EXPORTER_OTLP_ENDPOINT
	// is set); nil: New makes one for Name. The server shuts it down.
	Tracing *tracing.Tracing
}

// Server is a listening, not yet serving, instance.
type Server struct {
	opts   Options
	fresh  *discovery.Freshness // nil without metrics
	lis    net.Listener
	grpc   *grpc.Server
	health *health.Server
	reg    *consulx.Registrar
}

// New listens on opts.Listen and builds the gRPC server. Register the
// service implementations on GRPC() before Run.
func New(opts Options) (*Server, error) {
	if opts.Grace <= 0 {
		opts.Grace = 10 * time.Second
	}
	client, err := consulx.NewClient(opts.ConsulAddr)
	if err != nil {
		return nil, err
	}
	creds, err := opts.TLS.ServerOptions()
	if err != nil {
		return nil, err
	}
	if opts.Tracing == nil {
		var attrs []attribute.KeyValue
		for k, v := range opts.Meta {
			attrs = append(attrs, attribute.String("adrank."+k, v))
		}
		if opts.Tracing, err = tracing.New(context.Background(), opts.Name, attrs...); err != nil {
			return nil, err
		}
	}
	creds = append(creds, opts.Tracing.ServerOption())
	lis, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if opts.Metrics != nil {
		creds = append(creds, opts.Metrics.ServerOptions()...)
	}
	srv, hs := grpcx.NewServer(opts.Log, append(creds, opts.ServerOptions...)...)
	addr := opts.Advertise
	if addr == "" {
		addr = advertised(lis.Addr())
	} else if _, _, err := net.SplitHostPort(addr); err != nil {
		lis.Close()
		return nil, fmt.Errorf("advertise address %q: %w", addr, err)
	}
	reg := consulx.Registration{Name: opts.Name, Addr: addr, Tags: opts.Tags, Meta: opts.Meta, TLS: opts.TLS.Serving()}
	var fresh *discovery.Freshness
	if opts.Metrics != nil {
		fresh = discovery.NewFreshness()
		opts.Metrics.Reg.MustRegister(fresh)
	}
	return &Server{
		fresh:  fresh,
		opts:   opts,
		lis:    lis,
		grpc:   srv,
		health: hs,
		reg:    consulx.NewRegistrar(client, reg, opts.Log),
	}, nil
}

// advertised is the address other services dial: an unspecified host
// (":0", "0.0.0.0:0") becomes loopback.
func advertised(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
}

// WatchContext is ctx for the instance's Consul watches: with metrics on,
// they report when they last heard from Consul.
func (s *Server) WatchContext(ctx context.Context) context.Context {
	if s.fresh == nil {
		return ctx
	}
	return discovery.WithFreshness(ctx, s.fresh)
}

// GRPC is the server to register implementations on.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Addr is the address the instance is registered under.
func (s *Server) Addr() string {
	if s.opts.Advertise != "" {
		return s.opts.Advertise
	}
	return advertised(s.lis.Addr())
}

// Run serves, marks the instance SERVING, keeps it registered in Consul, and
// when ctx ends: NOT_SERVING, deregister, drain (bounded by Grace), stop.
// A clean shutdown returns nil.
func (s *Server) Run(ctx context.Context) error {
	log := s.opts.Log
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	log.Info("serving", "addr", s.Addr(), "listen", s.lis.Addr().String(), "name", s.opts.Name)
	g.Go(func() error { return s.reg.Run(gctx) })
	g.Go(func() error { return debugsrv.Run(gctx, s.opts.DebugAddr, log) })
	if m := s.opts.Metrics; m != nil {
		m.Server.InitializeMetrics(s.grpc) // every method at zero, before its first call
		g.Go(func() error { return metrics.Run(gctx, s.opts.MetricsAddr, m, log) })
	}
	g.Go(func() error {
		<-gctx.Done()
		s.drain()
		return nil
	})
	return g.Wait()
}

func (s *Server) drain() {
	log := s.opts.Log
	log.Info("shutting down: not serving, deregistering, draining", "grace", s.opts.Grace.String())
	s.health.Shutdown() // every service NOT_SERVING
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := s.reg.Deregister(ctx); err != nil {
		log.Warn("deregister failed; consul will reap the instance", "error", err)
	}
	cancel()
	defer func() { // the spans of the last calls, once they are drained
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.opts.Tracing.Shutdown(ctx); err != nil {
			log.Warn("trace export at shutdown failed", "error", err)
		}
	}()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(s.opts.Grace)
	defer t.Stop()
	select {
	case <-done:
		log.Info("drained")
	case <-t.C:
		log.Warn("grace period over; closing remaining connections")
		s.grpc.Stop()
		<-done
	}
}
