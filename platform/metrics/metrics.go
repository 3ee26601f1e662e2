// Package metrics is one process's Prometheus registry: Go runtime and
// process metrics, gRPC server and client metrics per method
// (go-grpc-middleware's providers/prometheus), and whatever the service
// adds, served at /metrics on its own address (--metrics-addr).
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/adrank/adrank/platform/debugsrv"
)

// Buckets are the latency buckets in seconds: 0.25 ms to 4 s, doubling,
// so that a p99 of a millisecond and one of a second both fall within.
var Buckets = prometheus.ExponentialBuckets(0.00025, 2, 15)

// Metrics is a process's registry and its gRPC metrics.
type Metrics struct {
	Reg    *prometheus.Registry
	Server *grpcprom.ServerMetrics
	Client *grpcprom.ClientMetrics
}

// New returns a registry with Go, process and gRPC metrics registered.
func New() *Metrics {
	m := &Metrics{
		Reg:    prometheus.NewRegistry(),
		Server: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(Buckets))),
		Client: grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(grpcprom.WithHistogramBuckets(Buckets))),
	}
	m.Reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.Server, m.Client)
	return m
}

// ServerOptions are the gRPC server options that count and time every call.
func (m *Metrics) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.Server.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.Server.StreamServerInterceptor()),
	}
}

// DialOptions are the gRPC dial options that count and time every call.
func (m *Metrics) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(m.Client.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(m.Client.StreamClientInterceptor()),
	}
}

// Handler serves the registry in Prometheus' text and OpenMetrics formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Reg, promhttp.HandlerOpts{Registry: m.Reg, EnableOpenMetrics: true, Timeout: 10 * time.Second})
}

// Run serves /metrics on addr until ctx ends. An empty addr serves nothing.
func Run(ctx context.Context, addr string, m *Metrics, log *slog.Logger) error {
	if m == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	return debugsrv.Serve(ctx, addr, "metrics", &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 15 * time.Second}, log)
}
