package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/tlsx/tlstest"
)

// TLS everywhere, from certificates the test makes: every service serves
// TLS only, the router calls features, rankers and the auction over TLS,
// the gateway serves HTTPS and calls the router over TLS, and Consul's
// health checks speak TLS. Plain text is refused at both edges.
func TestTLSEverywhere(t *testing.T) {
	pki := tlstest.New(t)
	c := startClusterOpts(t, clusterOptions{consul: consultest.Start, tls: pki}, [2]string{"feed/v1", "models/feed/v1.json"})
	if !strings.HasPrefix(c.gatewayURL, "https://") {
		t.Fatalf("gateway at %s", c.gatewayURL)
	}

	// Every instance is healthy in Consul: its TLS health check passes.
	for _, name := range []string{consulx.FeatureService, consulx.AuctionService, consulx.RankerService, consulx.RouterService} {
		eventually(t, settle, func() error {
			entries, _, err := c.consul.Client.Health().Service(name, "", true, nil)
			if err != nil || len(entries) != 1 {
				return fmt.Errorf("%s: %d healthy instances, %v", name, len(entries), err)
			}
			return nil
		})
	}

	// REST over HTTPS, through the router to every service over TLS.
	body, err := protojson.Marshal(rankRequest("tls-1", "feed"))
	if err != nil {
		t.Fatal(err)
	}
	var resp routerv1.RankResponse
	eventually(t, settle, func() error {
		code, out, err := c.tryDo(http.MethodPost, "/v1/rank", body)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("POST /v1/rank: %d %s %v", code, out, err)
		}
		return protojson.Unmarshal(out, &resp)
	})
	if len(resp.GetResults()) != 3 || resp.GetDegraded() {
		t.Fatalf("rank over TLS: %v", &resp)
	}
	// gRPC over TLS, the same answer.
	grpcResp, err := rank(t, c, rankRequest("tls-1", "feed"))
	if err != nil || grpcResp.GetResults()[0].GetImpressionId() != resp.GetResults()[0].GetImpressionId() {
		t.Fatalf("gRPC over TLS: %v, %v", grpcResp, err)
	}

	// Plain HTTP to the gateway: refused (Go's server answers 400 to plain
	// HTTP on a TLS port, and serves nothing).
	plainURL := strings.Replace(c.gatewayURL, "https://", "http://", 1)
	r, err := http.Post(plainURL+"/v1/rank", "application/json", strings.NewReader(string(body)))
	if err == nil {
		var out map[string]any
		_ = json.NewDecoder(r.Body).Decode(&out)
		r.Body.Close()
		if r.StatusCode == http.StatusOK || out["results"] != nil {
			t.Fatalf("plain HTTP served: %d %v", r.StatusCode, out)
		}
	}
	// Plain-text gRPC to the router: refused.
	cc, err := grpc.NewClient(c.routerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := routerv1.NewRouterServiceClient(cc).Rank(ctx, rankRequest("tls-2", "feed")); status.Code(err) != codes.Unavailable {
		t.Fatalf("plain-text gRPC: %v, want Unavailable", err)
	}

	// adrankctl reaches the router with --tls-ca (the router answers: no
	// canary to promote), and not without it.
	out, err := c.adrankctl(t, "", "canary", "promote", "feed", "--router", c.routerAddr, "--tls-ca", pki.CAFile)
	if err == nil || !strings.Contains(out, "FailedPrecondition") {
		t.Errorf("adrankctl with --tls-ca: %v %s, want the router's FailedPrecondition", err, out)
	}
	out, err = c.adrankctl(t, "", "canary", "promote", "feed", "--router", c.routerAddr)
	if err == nil || !strings.Contains(out, "Unavailable") {
		t.Errorf("adrankctl in plain text: %v %s, want Unavailable", err, out)
	}
}
