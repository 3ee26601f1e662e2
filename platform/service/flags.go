package service

import (
	"flag"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/adrank/adrank/platform/logging"
	"github.com/adrank/adrank/platform/metrics"
	"github.com/adrank/adrank/platform/tlsx"
)

// Flags are the flags every service shares.
type Flags struct {
	Listen     string
	Advertise  string
	ConsulAddr string
	Grace      time.Duration
	LogLevel   slog.Level
	DebugAddr  string
	// MetricsAddr serves /metrics (Prometheus) when not empty.
	MetricsAddr string
	GCPercent   int
	// TLS: the server's certificate, and the CA its calls to other
	// services verify them with.
	TLS tlsx.Config
}

// Register adds the shared flags to fs with the service's default listen
// address.
func (f *Flags) Register(fs *flag.FlagSet, listen string) {
	fs.StringVar(&f.Listen, "listen", listen, "gRPC listen address (port 0 picks a free port)")
	fs.StringVar(&f.Advertise, "advertise", "", "address to register in Consul, when callers must reach this instance through another (a proxy, NAT); default: the listen address")
	fs.StringVar(&f.ConsulAddr, "consul-addr", os.Getenv("CONSUL_HTTP_ADDR"), "Consul agent HTTP address (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	fs.DurationVar(&f.Grace, "grace", 10*time.Second, "shutdown grace period for draining in-flight requests")
	fs.StringVar(&f.DebugAddr, "debug-addr", "", "serve /debug/pprof/ on this address (e.g. 127.0.0.1:6060); empty: off")
	fs.StringVar(&f.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics at /metrics on this address (e.g. 127.0.0.1:9101); empty: off")
	fs.IntVar(&f.GCPercent, "gc-percent", DefaultGCPercent, "garbage collector target percentage (runtime/debug.SetGCPercent; 0: Go's default); GOGC in the environment wins")
	fs.TextVar(&f.LogLevel, "log-level", slog.LevelInfo, "log level: DEBUG, INFO, WARN or ERROR")
	f.TLS.Register(fs)
}

// DefaultGCPercent is the services' garbage collector target. Their live
// heaps are small while every request allocates, so Go's default (100)
// collects many times a second; 400 trades a few more MiB of heap for
// a fifth less CPU per request and a lower p99 (BENCHMARKS.md).
const DefaultGCPercent = 400

// Setup applies the runtime settings (the GC target) and returns the
// service's JSON logger on stderr. Every main calls it once, after parsing.
func (f *Flags) Setup(service string) *slog.Logger {
	if _, set := os.LookupEnv("GOGC"); !set && f.GCPercent != 0 {
		debug.SetGCPercent(f.GCPercent)
	}
	return logging.New(os.Stderr, service, f.LogLevel)
}

// Options returns service Options for a Consul service name; with
// --metrics-addr, a fresh metrics registry (Options.Metrics) that the
// service may add its own metrics to.
func (f *Flags) Options(name string, log *slog.Logger) Options {
	o := Options{Name: name, Listen: f.Listen, Advertise: f.Advertise, ConsulAddr: f.ConsulAddr, Grace: f.Grace, Log: log, DebugAddr: f.DebugAddr, TLS: f.TLS,
		MetricsAddr: f.MetricsAddr}
	if f.MetricsAddr != "" {
		o.Metrics = metrics.New()
	}
	return o
}
