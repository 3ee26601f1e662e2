// Package grpcx holds the gRPC server and client set-up every adrank service
// shares: request IDs, structured access logs, panic recovery, health and
// reflection.
package grpcx

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/adrank/adrank/platform/logging"
)

// RequestIDHeader is the metadata key that carries the request ID between
// services.
const RequestIDHeader = "x-request-id"

// MaxRequestIDLength bounds a request ID, in bytes.
const MaxRequestIDLength = 256

// NewServer returns a gRPC server with adrank's interceptors, a health
// service (every service NOT_SERVING until the caller says otherwise) and
// server reflection.
func NewServer(log *slog.Logger, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	opts = append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(requestID, accessLog(log), recoverer(log))}, opts...)
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs
}

// requestID gives the call one request ID, carried by the context to the
// logs and to every downstream call, and sent back to the caller of a
// successful call in the response header x-request-id:
//   - the request's own request_id field, when it has one (the ID the caller
//     chose, which the answer carries);
//   - else the x-request-id that an earlier edge (the gateway, or another
//     service) sent;
//   - else a new one: this service is the first edge to see the request.
//
// An x-request-id over MaxRequestIDLength bytes is refused with
// INVALID_ARGUMENT naming it.
func requestID(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	id := ""
	if r, ok := req.(interface{ GetRequestId() string }); ok && len(r.GetRequestId()) <= MaxRequestIDLength {
		id = r.GetRequestId() // a longer one is the handler's to refuse
	}
	if id == "" {
		// One key, without copying every header (FromIncomingContext does).
		if v := metadata.ValueFromIncomingContext(ctx, RequestIDHeader); len(v) > 0 {
			if len(v[0]) > MaxRequestIDLength {
				return nil, status.Errorf(codes.InvalidArgument, "%s: longer than %d bytes", RequestIDHeader, MaxRequestIDLength)
			}
			id = v[0]
		}
	}
	if id == "" {
		id = logging.NewRequestID()
	}
	resp, err := next(logging.WithRequestID(ctx, id), req)
	if err == nil {
		// Only on success: a response header commits the call, and gRPC
		// would then no longer retry an UNAVAILABLE on another instance.
		_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDHeader, id)) // fails only outside a server call
	}
	return resp, err
}

func accessLog(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if info.FullMethod == healthpb.Health_Check_FullMethodName {
			return next(ctx, req)
		}
		start := time.Now()
		resp, err := next(ctx, req)
		code := status.Code(err)
		level := slog.LevelDebug
		switch code {
		case codes.OK, codes.InvalidArgument, codes.NotFound, codes.Canceled:
		case codes.Internal, codes.Unknown, codes.DataLoss:
			level = slog.LevelError
		default:
			level = slog.LevelWarn
		}
		if !log.Enabled(ctx, level) { // the usual case for OK calls: no attributes built
			return resp, err
		}
		attrs := []any{"method", info.FullMethod, "code", code.String(), "duration_ms", float64(time.Since(start).Microseconds()) / 1000}
		if err != nil {
			attrs = append(attrs, "error", status.Convert(err).Message())
		}
		log.Log(ctx, level, "rpc", attrs...)
		return resp, err
	}
}

// recoverer turns a handler panic into INTERNAL so that one bad request never
// takes the process down.
func recoverer(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ctx, "panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return next(ctx, req)
	}
}

// PropagateRequestID is a client interceptor that sends the context's request
// ID downstream.
func PropagateRequestID(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if id := logging.RequestID(ctx); id != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, RequestIDHeader, id)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// ServiceConfig balances calls over the resolved instances by the fewest in
// flight (BalancerName) and retries UNAVAILABLE (a lost instance) on another
// one, within the caller's deadline.
const ServiceConfig = `{
  "loadBalancingConfig": [{"` + BalancerName + `": {}}],
  "methodConfig": [{
    "name": [{}],
    "retryPolicy": {
      "maxAttempts": 3,
      "initialBackoff": "0.005s",
      "maxBackoff": "0.05s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// ClientOptions are the dial options for calls between adrank services.
func ClientOptions(extra ...grpc.DialOption) []grpc.DialOption {
	return append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(ServiceConfig),
		grpc.WithChainUnaryInterceptor(PropagateRequestID, trackAttempts),
	}, extra...)
}
