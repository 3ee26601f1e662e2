package grpcx

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/adrank/adrank/platform/logging"
)

// withID is a request that names its own request ID.
type withID string

func (w withID) GetRequestId() string { return string(w) }

// One request ID per call: the request's own, else the metadata's, else a
// new one; a too-long metadata ID is refused.
func TestRequestID(t *testing.T) {
	long := strings.Repeat("x", MaxRequestIDLength+1)
	tests := []struct {
		name     string
		req      any
		header   string
		want     string // "": a new one
		wantCode codes.Code
	}{
		{"the request's own wins", withID("body-1"), "edge-1", "body-1", codes.OK},
		{"the edge's when the request names none", withID(""), "edge-2", "edge-2", codes.OK},
		{"the edge's for a request without the field", struct{}{}, "edge-3", "edge-3", codes.OK},
		{"a new one when there is neither", withID(""), "", "", codes.OK},
		{"a too-long request ID is left to the handler", withID(long), "edge-4", "edge-4", codes.OK},
		{"a too-long x-request-id is refused", withID(""), long, "", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.header != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(RequestIDHeader, tt.header))
			}
			var got string
			_, err := requestID(ctx, tt.req, &grpc.UnaryServerInfo{}, func(ctx context.Context, _ any) (any, error) {
				got = logging.RequestID(ctx)
				return nil, nil
			})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("code %v, want %v (%v)", status.Code(err), tt.wantCode, err)
			}
			if err != nil {
				if !strings.Contains(err.Error(), RequestIDHeader) {
					t.Errorf("error %q does not name %s", err, RequestIDHeader)
				}
				return
			}
			if tt.want != "" && got != tt.want || tt.want == "" && len(got) != 32 {
				t.Errorf("request ID %q, want %q (or a new 32-digit one)", got, tt.want)
			}
		})
	}
}
