// Package gateway is the REST edge: grpc-gateway in front of the router,
// plus /healthz and the OpenAPI document.
package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	// The router attaches errdetails (BadRequest) to errors; the gateway must
	// know their types to render them, or it answers 500.
	_ "google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/gen/openapi"
	"github.com/adrank/adrank/platform/grpcx"
	"github.com/adrank/adrank/platform/logging"
)

// OpenAPIPath serves the OpenAPI (Swagger 2.0) document.
const OpenAPIPath = "/openapi.json"

// Options shape the handler.
type Options struct {
	// Timeout is the deadline of every call to the router.
	Timeout time.Duration
	// MaxBody is the largest request body accepted; larger ones get 413.
	MaxBody int64
	Log     *slog.Logger
	// EdgeDir is the folder of edge bundles (adrankctl edge build --out);
	// empty: no edge manifests.
	EdgeDir string
	// Features, when set, is the connection to featuresvc: the feature
	// store's status, lookups and online writes under /v1/features.
	Features *grpc.ClientConn
}

// NewHandler serves the REST API over the router connection cc.
func NewHandler(ctx context.Context, cc *grpc.ClientConn, o Options) (http.Handler, error) {
	mux := runtime.NewServeMux(
		runtime.WithHealthzEndpoint(healthpb.NewHealthClient(cc)),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &jsonMarshaler{runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true, UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}}),
		runtime.WithOutgoingHeaderMatcher(outgoingHeader),
		// A known path with another method is 405, an unknown one 404 (not
		// grpc-gateway's 501 Unimplemented).
		runtime.WithRoutingErrorHandler(func(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
			writeJSONError(w, code, fmt.Sprintf("%s for %s %s", http.StatusText(code), r.Method, r.URL.Path))
		}),
		runtime.WithIncomingHeaderMatcher(func(h string) (string, bool) {
			if strings.EqualFold(h, grpcx.RequestIDHeader) {
				return grpcx.RequestIDHeader, true
			}
			return runtime.DefaultHeaderMatcher(h)
		}),
	)
	router := routerv1.NewRouterServiceClient(cc)
	if err := routerv1.RegisterRouterServiceHandlerClient(ctx, mux, router); err != nil {
		return nil, fmt.Errorf("register gateway: %w", err)
	}
	if err := registerEdge(mux, o.EdgeDir, router); err != nil {
		return nil, err
	}
	if o.Features != nil {
		if err := featuresv1.RegisterFeatureServiceHandlerClient(ctx, mux, featuresv1.NewFeatureServiceClient(o.Features)); err != nil {
			return nil, fmt.Errorf("register gateway: %w", err)
		}
	}
	if err := mux.HandlePath(http.MethodGet, OpenAPIPath, func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.JSON)
	}); err != nil {
		return nil, err
	}
	return limits(mux, o), nil
}

// outgoingHeader names the HTTP header of a router response's metadata:
// the router's server-timing becomes HTTP's Server-Timing, its x-request-id
// (the ID the request was served under) X-Request-Id, and the rest keep
// grpc-gateway's Grpc-Metadata- prefix.
func outgoingHeader(key string) (string, bool) {
	switch key {
	case serverTiming:
		return "Server-Timing", true
	case grpcx.RequestIDHeader:
		return requestIDHeader, true
	}
	return runtime.MetadataHeaderPrefix + key, true
}

// requestIDHeader is the HTTP spelling of grpcx.RequestIDHeader.
const requestIDHeader = "X-Request-Id"

// serverTiming is router.ServerTimingHeader (the router's packages are
// internal to its module).
const serverTiming = "server-timing"

// limits bounds the body size and the time of each request, and logs it.
func limits(next http.Handler, o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if r.ContentLength > o.MaxBody {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			fmt.Fprintf(w, `{"code":3,"message":"request body of %d bytes is over the limit of %d bytes","details":[]}`+"\n", r.ContentLength, o.MaxBody)
			return
		}
		if r.Body != nil && r.Body != http.NoBody && r.Method != http.MethodGet {
			// Only JSON: any other type (a form post from another site
			// included) is refused before it is parsed.
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				writeJSONError(w, http.StatusUnsupportedMediaType, `Content-Type must be "application/json"`)
				return
			}
			// The body is read here, within MaxBody whatever its framing
			// (a chunked body has no Content-Length to check above).
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, o.MaxBody))
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				writeJSONError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is over the limit of %d bytes", o.MaxBody))
				return
			}
			if err != nil {
				writeJSONError(w, http.StatusBadRequest, "reading the request body: "+err.Error())
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		// The gateway is the first edge a REST request meets: it mints the
		// request ID when the caller sent none, and the router serves under
		// it (unless the body names its own request_id, which the router
		// then answers under, in X-Request-Id too).
		id := r.Header.Get(grpcx.RequestIDHeader)
		if id == "" {
			id = logging.NewRequestID()
			r.Header.Set(grpcx.RequestIDHeader, id)
		}
		ctx, cancel := context.WithTimeout(logging.WithRequestID(r.Context(), id), o.Timeout)
		defer cancel()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK, id: id}
		next.ServeHTTP(rec, r.WithContext(ctx))
		if served := w.Header().Get(requestIDHeader); served != "" && served != id {
			ctx = logging.WithRequestID(ctx, served)
		}
		o.Log.LogAttrs(ctx, slog.LevelDebug, "http", slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", rec.code), slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000))
	})
}

// statusRecorder notes the response's status, and names the request ID in
// X-Request-Id when the router's answer did not.
type statusRecorder struct {
	http.ResponseWriter
	code  int
	id    string
	wrote bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.wrote, s.code = true, code
		if s.Header().Get(requestIDHeader) == "" {
			s.Header().Set(requestIDHeader, s.id)
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if !s.wrote {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}
