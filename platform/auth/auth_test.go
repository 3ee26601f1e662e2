package auth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestInterceptor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	admin, events := strings.Repeat("a", 20), strings.Repeat("e", 20)
	if err := os.WriteFile(path, []byte("# dev tokens\nadmin "+admin+"\n\nevents "+events+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ic := tok.Interceptor(map[string]Role{"/s/Promote": Admin, "/s/Events": Events})
	call := func(method, bearer string) codes.Code {
		ctx := context.Background()
		if bearer != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+bearer))
		}
		_, err := ic(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) { return "ok", nil })
		return status.Code(err)
	}
	for _, tc := range []struct {
		method, token string
		want          codes.Code
	}{
		{"/s/Rank", "", codes.OK},
		{"/s/Promote", "", codes.Unauthenticated},
		{"/s/Promote", "not-a-token-at-all", codes.Unauthenticated},
		{"/s/Promote", events, codes.PermissionDenied},
		{"/s/Promote", admin, codes.OK},
		{"/s/Events", "", codes.Unauthenticated},
		{"/s/Events", events, codes.OK},
		{"/s/Events", admin, codes.OK},
	} {
		if got := call(tc.method, tc.token); got != tc.want {
			t.Errorf("%s with %q: %v, want %v", tc.method, tc.token, got, tc.want)
		}
	}
}

func TestLoadRefuses(t *testing.T) {
	for _, body := range []string{"", "root " + strings.Repeat("x", 20), "admin short", "admin"} {
		path := filepath.Join(t.TempDir(), "tokens")
		os.WriteFile(path, []byte(body+"\n"), 0o600)
		if _, err := Load(path); err == nil {
			t.Errorf("%q loaded", body)
		}
	}
}
