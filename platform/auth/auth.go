// Package auth checks bearer tokens with roles on gRPC calls: who may
// change experiments (admin) and who may send events (events). Tokens come
// from a file of "role token" lines; a call without a token is
// UNAUTHENTICATED (HTTP 401), one whose token lacks the role
// PERMISSION_DENIED (403). The REST gateway passes the Authorization
// header on.
package auth

import (
	"bufio"
	"context"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Role is what a token may do.
type Role string

// Roles. Admin may do what Events may.
const (
	Admin  Role = "admin"
	Events Role = "events"
)

// MinTokenLength bounds a token from below: a short one is guessable.
const MinTokenLength = 16

type token struct {
	secret []byte
	role   Role
}

// Tokens are the known tokens.
type Tokens struct{ list []token }

// Load reads a tokens file: one "role token" per line; blank lines and
// lines starting with # are skipped.
func Load(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t := &Tokens{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		role, secret, ok := strings.Cut(line, " ")
		secret = strings.TrimSpace(secret)
		switch {
		case !ok || (Role(role) != Admin && Role(role) != Events):
			return nil, fmt.Errorf("%s:%d: want \"admin TOKEN\" or \"events TOKEN\"", path, n)
		case len(secret) < MinTokenLength:
			return nil, fmt.Errorf("%s:%d: a token needs at least %d characters", path, n, MinTokenLength)
		}
		t.list = append(t.list, token{secret: []byte(secret), role: Role(role)})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.list) == 0 {
		return nil, fmt.Errorf("%s: no tokens", path)
	}
	return t, nil
}

// role is the role of secret, or "" for none. Every token is compared, in
// constant time, so the time taken says nothing of which matched.
func (t *Tokens) role(secret string) Role {
	var found Role
	for _, k := range t.list {
		if subtle.ConstantTimeCompare(k.secret, []byte(secret)) == 1 {
			found = k.role
		}
	}
	return found
}

// Secret returns a token with the role, for calls this process makes to
// another that takes the same tokens file.
func (t *Tokens) Secret(role Role) (string, bool) {
	for _, tk := range t.list {
		if tk.role == role {
			return string(tk.secret), true
		}
	}
	return "", false
}

// Interceptor requires, for each full method named in need, a token with
// that role (or admin); other methods are open.
func (t *Tokens) Interceptor(need map[string]Role) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if err := t.check(ctx, need, info.FullMethod); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

// ServerOptions require, for each full method named in need, a token with
// that role, on unary and streaming methods alike.
func (t *Tokens) ServerOptions(need map[string]Role) []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(t.Interceptor(need)), grpc.ChainStreamInterceptor(t.StreamInterceptor(need))}
}

// StreamInterceptor is Interceptor for streaming methods.
func (t *Tokens) StreamInterceptor(need map[string]Role) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
		if err := t.check(ss.Context(), need, info.FullMethod); err != nil {
			return err
		}
		return next(srv, ss)
	}
}

// check requires the role need names for method, if it names one.
func (t *Tokens) check(ctx context.Context, need map[string]Role, method string) error {
	want, ok := need[method]
	if !ok {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var secret string
	for _, v := range md.Get("authorization") {
		if s, ok := strings.CutPrefix(v, "Bearer "); ok {
			secret = strings.TrimSpace(s)
		}
	}
	if secret == "" {
		return status.Errorf(codes.Unauthenticated, "%s needs a bearer token with the %s role (Authorization: Bearer TOKEN)", method, want)
	}
	switch got := t.role(secret); {
	case got == "":
		return status.Error(codes.Unauthenticated, "unknown token")
	case got != want && got != Admin:
		return status.Errorf(codes.PermissionDenied, "%s needs the %s role; this token has %s", method, want, got)
	}
	return nil
}
