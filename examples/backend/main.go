// Command backend is an example of the monolith architecture: an ordinary
// Go HTTP service (a feed page and a click endpoint) that ranks ads by
// calling adrank as a library, in its own process, with no network hop and
// no Consul.
//
//	go run ./examples/backend -models models -listen 127.0.0.1:8090
//	curl -s '127.0.0.1:8090/feed?user=u42'
//	curl -s -X POST '127.0.0.1:8090/click?impression=<impression_id>'
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/routersvc/adrank"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "HTTP listen address")
	models := flag.String("models", "models", "model files <dir>/<domain>/<version>.json")
	state := flag.String("state-file", ".data/backend.db", "experiment state (bbolt)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*listen, adrank.Config{Models: *models, StateFile: *state, Log: log}, log); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func run(listen string, cfg adrank.Config, log *slog.Logger) error {
	engine, err := adrank.Open(cfg)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: listen, Handler: handler(engine), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("serving", "addr", listen)
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, engine.Close()) // writes what the engine recorded
}

// handler serves the backend's two endpoints.
func handler(engine *adrank.Engine) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /feed", func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		if user == "" {
			http.Error(w, "user: is required", http.StatusBadRequest)
			return
		}
		resp, err := engine.Rank(r.Context(), feedRequest(user))
		if err != nil {
			httpError(w, err)
			return
		}
		type ad struct {
			AdID         string `json:"ad_id"`
			Slot         int32  `json:"slot"`
			PriceMicros  int64  `json:"price_micros"`
			ImpressionID string `json:"impression_id"`
		}
		page := struct {
			Ads []ad `json:"ads"`
		}{}
		for _, res := range resp.GetResults() {
			page.Ads = append(page.Ads, ad{res.GetAdId(), res.GetSlot(), res.GetPriceMicros(), res.GetImpressionId()})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(page)
	})
	mux.HandleFunc("POST /click", func(w http.ResponseWriter, r *http.Request) {
		resp, err := engine.ReportEvents(r.Context(), &routerv1.ReportEventsRequest{Events: []*routerv1.Event{
			{ImpressionId: r.URL.Query().Get("impression"), Type: routerv1.EventType_EVENT_TYPE_CLICK},
		}})
		if err != nil {
			httpError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"result": resp.GetResults()[0].String()})
	})
	return mux
}

// feedRequest asks for 3 slots among the backend's 20 candidate feed ads.
func feedRequest(user string) *routerv1.RankRequest {
	req := &routerv1.RankRequest{UserId: user, Domain: "feed", Slots: 3,
		Context: &routerv1.RequestContext{Device: routerv1.Device_DEVICE_MOBILE, Country: "US"}}
	for i := 1; i <= 20; i++ {
		req.Candidates = append(req.Candidates, &routerv1.Candidate{AdId: fmt.Sprintf("ad%d", i), BidMicros: int64(100_000 * i)})
	}
	return req
}

// httpError maps the engine's gRPC status errors to HTTP.
func httpError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch status.Code(err) {
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.Unavailable, codes.ResourceExhausted:
		code = http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		code = http.StatusGatewayTimeout
	}
	http.Error(w, status.Convert(err).Message(), code)
}
