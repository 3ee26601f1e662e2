// Package debugsrv serves a service's runtime profiles (net/http/pprof) on a
// separate, loopback-only debug address, never on the serving port.
package debugsrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// Handler serves /debug/pprof/ on its own mux (not http.DefaultServeMux).
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Run serves Handler on addr until ctx ends. An empty addr serves nothing.
func Run(ctx context.Context, addr string, log *slog.Logger) error {
	// No write timeout: a CPU profile streams for its requested seconds.
	return Serve(ctx, addr, "pprof", &http.Server{Handler: Handler(), ReadHeaderTimeout: 5 * time.Second}, log)
}

// Serve runs srv on addr until ctx ends, then shuts it down within a
// second; what names it in logs and errors. An empty addr serves nothing.
func Serve(ctx context.Context, addr, what string, srv *http.Server, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listen: %w", what, err)
	}
	log.Info("serving "+what, "addr", lis.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s serve: %w", what, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
