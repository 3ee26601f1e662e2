package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/adrank/adrank/platform/consultest"
)

// collector is an OTLP trace collector in the test's process.
type collector struct {
	collectorpb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []span
}

// span is one received span with its service's name.
type span struct {
	service string
	*tracepb.Span
}

func (c *collector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, span{service, s})
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func (c *collector) trace(id []byte) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []span
	for _, s := range c.spans {
		if bytes.Equal(s.GetTraceId(), id) {
			out = append(out, s)
		}
	}
	return out
}

func startCollector(t *testing.T) (*collector, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return c, lis.Addr().String()
}

func attr(s span, key string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == key {
			if v, ok := a.GetValue().GetValue().(*commonpb.AnyValue_BoolValue); ok {
				return fmt.Sprint(v.BoolValue)
			}
			return a.GetValue().GetStringValue()
		}
	}
	return ""
}

// One trace per request, from the REST edge through the router to
// features, the ranker and the auction, continuing the caller's W3C
// traceparent; the router's span says what it did, and its log lines carry
// the trace ID.
func TestTracing(t *testing.T) {
	col, addr := startCollector(t)
	c := startClusterOpts(t, clusterOptions{consul: consultest.Start, env: []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + addr, "OTEL_BSP_SCHEDULE_DELAY=100",
	}, args: []string{"--log-level", "DEBUG"}}, [2]string{"feed/v1", "models/feed/v1.json"})

	traceID := strings.Repeat("4bf92f3577b34da6", 2)
	parentID := "00f067aa0ba902b7"
	body, err := protojson.Marshal(rankRequest("traced-1", "feed"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, c.gatewayURL+"/v1/rank", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("rank: %d", resp.StatusCode)
	}

	tid, _ := hex.DecodeString(traceID)
	want := map[string]bool{"gateway": true, "routersvc": true, "adrank-feature": true, "adrank-ranker": true, "adrank-auction": true}
	var spans []span
	eventually(t, settle, func() error {
		spans = col.trace(tid)
		seen := map[string]bool{}
		for _, s := range spans {
			seen[s.service] = true
		}
		for svc := range want {
			if !seen[svc] {
				return fmt.Errorf("no span from %s yet (%d spans)", svc, len(spans))
			}
		}
		return nil
	})
	find := func(service string, kind tracepb.Span_SpanKind, nameHas string) span {
		t.Helper()
		for _, s := range spans {
			if s.service == service && s.GetKind() == kind && strings.Contains(s.GetName(), nameHas) {
				return s
			}
		}
		var all []string
		for _, s := range spans {
			all = append(all, s.service+":"+s.GetKind().String()+":"+s.GetName())
		}
		t.Fatalf("no %s %s span %q among %v", service, kind, nameHas, all)
		return span{}
	}
	parent := func(s span) string { return hex.EncodeToString(s.GetParentSpanId()) }
	id := func(s span) string { return hex.EncodeToString(s.GetSpanId()) }

	edge := find("gateway", tracepb.Span_SPAN_KIND_SERVER, "/v1/rank")
	if parent(edge) != parentID {
		t.Errorf("the gateway's span has parent %s, want the caller's %s", parent(edge), parentID)
	}
	toRouter := find("gateway", tracepb.Span_SPAN_KIND_CLIENT, "RouterService/Rank")
	rank := find("routersvc", tracepb.Span_SPAN_KIND_SERVER, "RouterService/Rank")
	if parent(toRouter) != id(edge) || parent(rank) != id(toRouter) {
		t.Errorf("gateway %s -> client %s (parent %s) -> router %s (parent %s): not a chain", id(edge), id(toRouter), parent(toRouter), id(rank), parent(rank))
	}
	for k, v := range map[string]string{"adrank.domain": "feed", "adrank.version": "v1", "adrank.strategy": "production", "adrank.source": "realtime", "adrank.degraded": "false"} {
		if got := attr(rank, k); got != v {
			t.Errorf("router span %s = %q, want %q", k, got, v)
		}
	}
	for svc, method := range map[string]string{"adrank-feature": "FeatureService/", "adrank-ranker": "RankerService/Score", "adrank-auction": "AuctionService/"} {
		client := find("routersvc", tracepb.Span_SPAN_KIND_CLIENT, method)
		server := find(svc, tracepb.Span_SPAN_KIND_SERVER, method)
		if parent(client) != id(rank) || parent(server) != id(client) {
			t.Errorf("%s: router %s -> client %s (parent %s) -> server %s (parent %s): not a chain", svc, id(rank), id(client), parent(client), id(server), parent(server))
		}
	}
	// The router's access log line for the call carries the trace ID.
	if out := c.proc("routersvc").out.String(); !strings.Contains(out, `"trace_id":"`+traceID+`"`) {
		t.Errorf("no router log line with trace_id %s", traceID)
	}
	t.Logf("%d spans in trace %s, a tree from the caller's span through gateway, router, features, ranker and auction", len(spans), traceID)
}
