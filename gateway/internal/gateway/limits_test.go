package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// What the gateway refuses before the router sees anything.
func TestGatewayRefusesBeforeTheRouter(t *testing.T) {
	cc, err := grpc.NewClient("passthrough:///127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	h, err := NewHandler(context.Background(), cc, Options{Timeout: time.Second, MaxBody: 1 << 20, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	big := strings.NewReader(`{"user_id": "` + strings.Repeat("u", 2<<20) + `"}`)
	for _, tc := range []struct {
		name, method, path, ctype string
		body                      io.Reader
		want                      int
	}{
		{"a known path, another method", http.MethodGet, "/v1/rank", "", nil, http.StatusMethodNotAllowed},
		{"an unknown path", http.MethodGet, "/v1/nothing", "", nil, http.StatusNotFound},
		{"a form post (another site's, say)", http.MethodPost, "/v1/rank", "application/x-www-form-urlencoded", strings.NewReader("user_id=u1"), http.StatusUnsupportedMediaType},
		{"plain text", http.MethodPost, "/v1/events", "text/plain", strings.NewReader("{}"), http.StatusUnsupportedMediaType},
		{"no content type", http.MethodPost, "/v1/rank", "", strings.NewReader("{}"), http.StatusUnsupportedMediaType},
		// io.MultiReader hides the length: the body goes chunked.
		{"a chunked body over the limit", http.MethodPost, "/v1/rank", "application/json", io.MultiReader(big), http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, tc.body)
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want || !strings.Contains(resp.Header.Get("Content-Type"), "json") {
				t.Fatalf("%d %s (%s), want %d", resp.StatusCode, b, resp.Header.Get("Content-Type"), tc.want)
			}
		})
	}
}
