package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/assign"
	"github.com/adrank/adrank/platform/consultest"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/idsig"
	"github.com/adrank/adrank/platform/syncbuf"
	"github.com/adrank/adrank/routersvc/adrank"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var demoRankers = [][2]string{
	{"feed/v1", "models/feed/v1.json"},
	{"feed/v2", "models/feed/v2.json"},
	{"stories/v1", "models/stories/v1.json"},
}

// rankRequest asks for 3 slots among 20 feed ads (ad1..ad20 are feed ads in
// the demo world) with varied bids.
func rankRequest(requestID, domain string) *routerv1.RankRequest {
	req := &routerv1.RankRequest{
		RequestId: requestID,
		UserId:    "u42",
		Domain:    domain,
		Slots:     3,
		Context: &routerv1.RequestContext{
			Timestamp: timestamppb.New(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)),
			Device:    routerv1.Device_DEVICE_MOBILE,
			Country:   "US",
		},
	}
	offset := 0
	if domain == "stories" {
		offset = 1000 // stories ads are ad1001..ad2000
	}
	for i := range 20 {
		req.Candidates = append(req.Candidates, &routerv1.Candidate{
			AdId:         fmt.Sprintf("ad%d", offset+i+1),
			AdvertiserId: fmt.Sprintf("adv%d", i%7+1),
			BidMicros:    int64(200_000 + 37_000*i),
		})
	}
	return req
}

func rank(t *testing.T, c *cluster, req *routerv1.RankRequest) (*routerv1.RankResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.router.Rank(ctx, req)
}

// checkResponse asserts the invariants of any Rank answer.
func checkResponse(t *testing.T, req *routerv1.RankRequest, resp *routerv1.RankResponse) {
	t.Helper()
	bids := map[string]int64{}
	for _, c := range req.GetCandidates() {
		bids[c.GetAdId()] = c.GetBidMicros()
	}
	if got, want := len(resp.GetResults()), int(req.GetSlots()); got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	seen := map[string]bool{}
	for i, r := range resp.GetResults() {
		if r.GetSlot() != int32(i+1) {
			t.Errorf("result %d has slot %d", i, r.GetSlot())
		}
		bid, ok := bids[r.GetAdId()]
		if !ok || seen[r.GetAdId()] {
			t.Errorf("result %d: ad %q not a candidate or repeated", i, r.GetAdId())
		}
		seen[r.GetAdId()] = true
		if r.GetPctr() <= 0 || r.GetPctr() >= 1 {
			t.Errorf("result %d: pctr %v outside (0, 1)", i, r.GetPctr())
		}
		if r.GetPriceMicros() <= 0 || r.GetPriceMicros() > bid {
			t.Errorf("result %d: price %d outside (0, bid %d]", i, r.GetPriceMicros(), bid)
		}
		// The plain ID of (domain, user, request, ad, slot), signed.
		plain := assign.ImpressionID(resp.GetDomain(), req.GetUserId(), resp.GetRequestId(), r.GetAdId(), int(r.GetSlot()))
		if id := r.GetImpressionId(); !strings.HasPrefix(id, plain+".") || len(id) != len(plain)+idsig.TagLength {
			t.Errorf("result %d: impression id %q, want %s signed", i, id, plain)
		}
	}
	// Slots are filled by eCPM = bid x pCTR, highest first.
	for i := 1; i < len(resp.GetResults()); i++ {
		a, b := resp.GetResults()[i-1], resp.GetResults()[i]
		if float64(bids[a.GetAdId()])*a.GetPctr() < float64(bids[b.GetAdId()])*b.GetPctr() {
			t.Errorf("slot %d has a lower eCPM than slot %d", a.GetSlot(), b.GetSlot())
		}
	}
}

// The shared cluster for tests that do not change it.
func TestPipeline(t *testing.T) {
	c := startCluster(t, demoRankers...)

	t.Run("rank over gRPC is deterministic and well formed", func(t *testing.T) {
		req := rankRequest("req-1", "feed")
		first, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		checkResponse(t, req, first)
		if first.GetAuctionType() != "gsp" {
			t.Errorf("auction %q, want the default gsp", first.GetAuctionType())
		}
		for _, r := range first.GetResults() {
			if r.GetEcpm() <= 0 || r.GetRunnerUpEcpm() > r.GetEcpm() {
				t.Errorf("result %s explains its price with eCPM %v and runner-up %v", r.GetAdId(), r.GetEcpm(), r.GetRunnerUpEcpm())
			}
		}
		if first.GetModelVersion() != "v1" || first.GetDomain() != "feed" || first.GetRequestId() != "req-1" {
			t.Errorf("got version %q domain %q request %q", first.GetModelVersion(), first.GetDomain(), first.GetRequestId())
		}
		second, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, second, protocmp.Transform()); diff != "" {
			t.Errorf("same request, different answer (-first +second):\n%s", diff)
		}
	})

	t.Run("rank over REST equals gRPC", func(t *testing.T) {
		req := rankRequest("req-rest", "stories")
		want, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := protojson.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		code, out := c.post("/v1/rank", body)
		if code != http.StatusOK {
			t.Fatalf("POST /v1/rank: %d %s", code, out)
		}
		got := &routerv1.RankResponse{}
		if err := protojson.Unmarshal(out, got); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("REST differs from gRPC (-grpc +rest):\n%s", diff)
		}
		if !strings.Contains(string(out), `"request_id"`) {
			t.Errorf("REST answer does not use proto field names: %s", out)
		}
	})

	t.Run("a per-request reserve", func(t *testing.T) {
		req := rankRequest("req-reserve", "feed")
		req.ReserveMicros = 800_000 // only bids of at least 0.8 currency units take part
		resp, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetResults() {
			if r.GetPriceMicros() < 800_000 || r.GetReserveMicros() != 800_000 || bidOf(req, r.GetAdId()) < 800_000 {
				t.Errorf("%s: price %d reserve %d bid %d", r.GetAdId(), r.GetPriceMicros(), r.GetReserveMicros(), bidOf(req, r.GetAdId()))
			}
		}
	})

	t.Run("one request id from the first edge to the answer", func(t *testing.T) {
		for _, tc := range []struct {
			name, header, body, want string // want "": the one the gateway minted
		}{
			{"header only", "edge-7", "", "edge-7"},
			{"neither", "", "", ""},
			{"body wins", "edge-8", "body-8", "body-8"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body, _ := protojson.Marshal(rankRequest(tc.body, "feed"))
				req, err := http.NewRequest(http.MethodPost, c.gatewayURL+"/v1/rank", bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				if tc.header != "" {
					req.Header.Set("X-Request-Id", tc.header)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				out, _ := io.ReadAll(resp.Body)
				var got routerv1.RankResponse
				if err := protojson.Unmarshal(out, &got); err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("%d %s: %v", resp.StatusCode, out, err)
				}
				want := tc.want
				if want == "" {
					want = resp.Header.Get("X-Request-Id")
				}
				if h := resp.Header.Values("X-Request-Id"); want == "" || got.GetRequestId() != want || len(h) != 1 || h[0] != want {
					t.Errorf("answer's request_id %q, X-Request-Id %q: want both %q", got.GetRequestId(), h, want)
				}
			})
		}
		// Over gRPC, a request ID in the metadata serves the request when
		// its body names none, and a too-long one is refused.
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "grpc-9"), 10*time.Second)
		defer cancel()
		if resp, err := c.router.Rank(ctx, rankRequest("", "feed")); err != nil || resp.GetRequestId() != "grpc-9" {
			t.Errorf("gRPC with x-request-id grpc-9: request_id %q, %v", resp.GetRequestId(), err)
		}
		ctx = metadata.AppendToOutgoingContext(context.Background(), "x-request-id", strings.Repeat("x", 257))
		if _, err := c.router.Rank(ctx, rankRequest("", "feed")); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "x-request-id") {
			t.Errorf("a 257-byte x-request-id: %v, want INVALID_ARGUMENT naming it", err)
		}
	})

	t.Run("generated request id", func(t *testing.T) {
		req := rankRequest("", "feed")
		a, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		if a.GetRequestId() == "" || a.GetRequestId() == b.GetRequestId() {
			t.Errorf("request ids %q and %q: want distinct, non-empty", a.GetRequestId(), b.GetRequestId())
		}
		if a.GetResults()[0].GetImpressionId() == b.GetResults()[0].GetImpressionId() {
			t.Error("two requests share an impression id")
		}
	})

	t.Run("cold start: unknown user and unseen ads are ranked", func(t *testing.T) {
		req := rankRequest("req-cold", "feed")
		req.UserId = "someone-new"
		req.Candidates = append(req.Candidates,
			&routerv1.Candidate{AdId: "brand-new-ad", AdvertiserId: "adv-new", BidMicros: 5_000_000})
		resp, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		checkResponse(t, req, resp)
		// The new ad bids far above the rest; with its features missing it
		// still gets an average pCTR, so it wins the first slot.
		if resp.GetResults()[0].GetAdId() != "brand-new-ad" {
			t.Errorf("slot 1 is %q, want the high-bidding unseen ad", resp.GetResults()[0].GetAdId())
		}
	})

	t.Run("feed v1 and v2 really differ", func(t *testing.T) {
		req := rankRequest("req-versions", "feed")
		v1, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		d := c.domains()["feed"]
		if versionOf(d, "v1").GetModelSha256() == versionOf(d, "v2").GetModelSha256() {
			t.Fatal("v1 and v2 have the same model sha256")
		}
		c.putKV("adrank/domains/feed", `{"production": "v2"}`)
		t.Cleanup(func() { c.putKV("adrank/domains/feed", `{"production": "v1"}`) })
		var v2 *routerv1.RankResponse
		eventually(t, settle, func() error {
			v2, err = rank(t, c, req)
			if err != nil {
				return err
			}
			if v2.GetModelVersion() != "v2" {
				return fmt.Errorf("served by %q", v2.GetModelVersion())
			}
			return nil
		})
		if v1.GetResults()[0].GetPctr() == v2.GetResults()[0].GetPctr() && v1.GetResults()[0].GetAdId() == v2.GetResults()[0].GetAdId() {
			t.Error("v1 and v2 gave the same top pCTR")
		}
		eventually(t, settle, func() error {
			c.putKV("adrank/domains/feed", `{"production": "v1"}`)
			if v := c.domains()["feed"].GetProductionVersion(); v != "v1" {
				return fmt.Errorf("production %q", v)
			}
			return nil
		})
	})

	// The seed's three architectures from the same code: the microservices
	// (the cluster), ML as one service (routersvc --ml-service, a process of
	// its own on the same Consul) and the monolith (adrank as a library,
	// in this test's process).
	t.Run("the three architectures give the same answers, experiments included", func(t *testing.T) {
		ports, err := consultest.FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
		ml := c.start("routersvc", append([]string{"--ml-service", "--listen", addr, "--state-file", filepath.Join(t.TempDir(), "ml.db")}, routerLimits...)...)
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		one := routerv1.NewRouterServiceClient(cc)
		lib, err := adrank.Open(adrank.Config{Models: filepath.Join(c.root, "models"), StateFile: filepath.Join(t.TempDir(), "lib.db"),
			Production: map[string]string{"feed": "v1", "stories": "v1"}, ImpressionKey: c.impressionKey})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := lib.Close(); err != nil {
				t.Error(err)
			}
		}()
		// It registers as a router does.
		eventually(t, settle, func() error {
			entries, _, err := c.consul.Client.Health().Service(consulx.RouterService, "", true, nil)
			if err != nil || len(entries) != 2 {
				return fmt.Errorf("%d healthy routers: %v", len(entries), err)
			}
			return nil
		})
		compare := func(prefix string) {
			t.Helper()
			for i, domain := range []string{"feed", "stories", "feed"} {
				req := rankRequest(fmt.Sprintf("%s-%d", prefix, i), domain)
				req.UserId = fmt.Sprintf("u%d", 100+i)
				want, err := rank(t, c, req)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				got, err := one.Rank(ctx, req)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
					t.Errorf("%s: ML as one service differs from microservices (-micro +one):\n%s", domain, diff)
				}
				ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
				got, err = lib.Rank(ctx, req)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
					t.Errorf("%s: the library differs from microservices (-micro +library):\n%s", domain, diff)
				}
			}
		}
		compare("req-one")
		// An experiment from Consul KV is in force in both, with the same
		// assignments.
		ab := `{"ab": {"salt": "one", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`
		c.putKV("adrank/experiments/feed", ab)
		if err := lib.SetExperiment("feed", []byte(ab)); err != nil {
			t.Fatal(err)
		}
		for _, r := range []routerv1.RouterServiceClient{c.router, one} {
			eventually(t, settle, func() error {
				rep, err := r.GetExperimentReport(context.Background(), &routerv1.GetExperimentReportRequest{Domain: "feed"})
				if err != nil || rep.GetExperimentId() != "ab:one:v1,v2" {
					return fmt.Errorf("experiment %q: %v", rep.GetExperimentId(), err)
				}
				return nil
			})
		}
		compare("req-one-ab")
		// The library counts what it served in its own store.
		rep, err := lib.Report(context.Background(), "feed")
		if err != nil {
			t.Fatal(err)
		}
		var imps float64
		for _, a := range rep.GetAb().GetArms() {
			imps += a.GetImpressions()
		}
		if imps == 0 {
			t.Errorf("the library's report counts no impression: %v", rep)
		}
		if _, err := c.consul.Client.KV().Delete("adrank/experiments/feed", nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, settle, func() error { // the next subtests expect no experiment
			if id := c.report(t, "feed").GetExperimentId(); id != "" {
				return fmt.Errorf("experiment %q still in force", id)
			}
			return nil
		})
		if err := ml.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := ml.exitCode(t, settle); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})

	t.Run("list domains over REST", func(t *testing.T) {
		code, out := c.get("/v1/domains")
		if code != http.StatusOK {
			t.Fatalf("GET /v1/domains: %d %s", code, out)
		}
		resp := &routerv1.ListDomainsResponse{}
		if err := protojson.Unmarshal(out, resp); err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for _, d := range resp.GetDomains() {
			got[d.GetDomain()] = append(got[d.GetDomain()], "production="+d.GetProductionVersion())
			for _, v := range d.GetVersions() {
				got[d.GetDomain()] = append(got[d.GetDomain()], fmt.Sprintf("%s:%d/%d", v.GetVersion(), v.GetHealthyInstances(), v.GetTotalInstances()))
				if len(v.GetModelSha256()) != 64 {
					t.Errorf("%s/%s: sha256 %q", d.GetDomain(), v.GetVersion(), v.GetModelSha256())
				}
			}
		}
		want := map[string][]string{
			"feed":    {"production=v1", "v1:1/1", "v2:1/1"},
			"stories": {"production=v1", "v1:1/1"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("domains (-want +got):\n%s", diff)
		}
	})

	t.Run("healthz and openapi", func(t *testing.T) {
		if code, out := c.get("/healthz"); code != http.StatusOK || !strings.Contains(string(out), "SERVING") {
			t.Errorf("/healthz: %d %s", code, out)
		}
		code, out := c.get("/openapi.json")
		if code != http.StatusOK {
			t.Fatalf("/openapi.json: %d", code)
		}
		var doc struct {
			Swagger string                    `json:"swagger"`
			Paths   map[string]map[string]any `json:"paths"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Swagger != "2.0" || doc.Paths["/v1/rank"]["post"] == nil || doc.Paths["/v1/domains"]["get"] == nil {
			t.Errorf("openapi document lacks the API: swagger %q paths %v", doc.Swagger, doc.Paths)
		}
	})

	t.Run("grpcurl through server reflection", func(t *testing.T) {
		grpcurl := c.bin("tools/grpcurl")
		out, err := exec.Command(grpcurl, "-plaintext", c.routerAddr, "list").CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl list: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "adrank.router.v1.RouterService") {
			t.Errorf("grpcurl list: %s", out)
		}
		body, _ := protojson.Marshal(rankRequest("req-grpcurl", "feed"))
		out, err = exec.Command(grpcurl, "-plaintext", "-d", string(body), c.routerAddr, "adrank.router.v1.RouterService/Rank").CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl Rank: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), `"impressionId"`) {
			t.Errorf("grpcurl Rank: %s", out)
		}
	})

	t.Run("bad input over gRPC names the field", func(t *testing.T) {
		many := rankRequest("x", "feed")
		for i := range 1001 {
			many.Candidates = append(many.Candidates, &routerv1.Candidate{AdId: fmt.Sprintf("extra%d", i), BidMicros: 1})
		}
		tests := []struct {
			name  string
			edit  func(*routerv1.RankRequest)
			code  codes.Code
			field string
		}{
			{"missing user_id", func(r *routerv1.RankRequest) { r.UserId = "" }, codes.InvalidArgument, "user_id"},
			{"missing domain", func(r *routerv1.RankRequest) { r.Domain = "" }, codes.InvalidArgument, "domain"},
			{"zero slots", func(r *routerv1.RankRequest) { r.Slots = 0 }, codes.InvalidArgument, "slots"},
			{"negative slots", func(r *routerv1.RankRequest) { r.Slots = -3 }, codes.InvalidArgument, "slots"},
			{"no candidates", func(r *routerv1.RankRequest) { r.Candidates = nil }, codes.InvalidArgument, "candidates"},
			{"too many candidates", func(r *routerv1.RankRequest) { r.Candidates = many.Candidates }, codes.InvalidArgument, "candidates"},
			{"duplicate ad_id", func(r *routerv1.RankRequest) { r.Candidates[5].AdId = r.Candidates[2].AdId }, codes.InvalidArgument, "candidates[5].ad_id"},
			{"empty ad_id", func(r *routerv1.RankRequest) { r.Candidates[1].AdId = "" }, codes.InvalidArgument, "candidates[1].ad_id"},
			{"zero bid", func(r *routerv1.RankRequest) { r.Candidates[3].BidMicros = 0 }, codes.InvalidArgument, "candidates[3].bid_micros"},
			{"negative bid", func(r *routerv1.RankRequest) { r.Candidates[0].BidMicros = -5 }, codes.InvalidArgument, "candidates[0].bid_micros"},
			{"bad timestamp", func(r *routerv1.RankRequest) { r.Context.Timestamp.Nanos = -1 }, codes.InvalidArgument, "context.timestamp"},
			{"unknown device", func(r *routerv1.RankRequest) { r.Context.Device = 42 }, codes.InvalidArgument, "context.device"},
			{"negative reserve", func(r *routerv1.RankRequest) { r.ReserveMicros = -1 }, codes.InvalidArgument, "reserve_micros"},
			{"negative quality", func(r *routerv1.RankRequest) { r.Candidates[4].Quality = -2 }, codes.InvalidArgument, "candidates[4].quality"},
			{"unknown domain", func(r *routerv1.RankRequest) { r.Domain = "video" }, codes.NotFound, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				req := rankRequest("req-bad", "feed")
				tt.edit(req)
				_, err := rank(t, c, req)
				st := status.Convert(err)
				if st.Code() != tt.code {
					t.Fatalf("code %v (%s), want %v", st.Code(), st.Message(), tt.code)
				}
				if tt.field == "" {
					return
				}
				if !strings.HasPrefix(st.Message(), tt.field+":") {
					t.Errorf("message %q does not start with the field %q", st.Message(), tt.field)
				}
				var fields []string
				for _, d := range st.Details() {
					if br, ok := d.(*errdetails.BadRequest); ok {
						for _, v := range br.GetFieldViolations() {
							fields = append(fields, v.GetField())
						}
					}
				}
				if len(fields) == 0 || fields[0] != tt.field {
					t.Errorf("field violations %v, want %q first", fields, tt.field)
				}
			})
		}
	})

	t.Run("bad input over REST", func(t *testing.T) {
		valid, _ := protojson.Marshal(rankRequest("req-rest-bad", "feed"))
		noUser := proto.Clone(rankRequest("req-rest-bad", "feed")).(*routerv1.RankRequest)
		noUser.UserId = ""
		noUserJSON, _ := protojson.Marshal(noUser)
		unknownDomain, _ := protojson.Marshal(rankRequest("req-rest-bad", "video"))
		huge := `{"user_id": "u1", "domain": "feed", "slots": 1, "context": {"query": "` + strings.Repeat("x", 1<<20) + `"}}`
		tests := []struct {
			name, body string
			code       int
			contains   string
		}{
			{"valid", string(valid), http.StatusOK, "results"},
			{"malformed JSON", `{"user_id": "u1", "domain":`, http.StatusBadRequest, ""},
			{"not an object", `[1, 2, 3]`, http.StatusBadRequest, ""},
			{"wrong type", `{"user_id": "u1", "domain": "feed", "slots": "three"}`, http.StatusBadRequest, ""},
			{"unknown field", `{"user_id": "u1", "domain": "feed", "slotz": 3}`, http.StatusBadRequest, "slotz"},
			{"missing user_id", string(noUserJSON), http.StatusBadRequest, "user_id"},
			{"unknown domain", string(unknownDomain), http.StatusNotFound, "video"},
			{"body over 1 MiB", huge, http.StatusRequestEntityTooLarge, ""},
			{"empty body", ``, http.StatusBadRequest, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, out := c.post("/v1/rank", []byte(tt.body))
				if code != tt.code {
					t.Fatalf("status %d, want %d: %s", code, tt.code, trim(out))
				}
				if !strings.Contains(string(out), tt.contains) {
					t.Errorf("body %s does not mention %q", trim(out), tt.contains)
				}
			})
		}
	})
}

func bidOf(req *routerv1.RankRequest, adID string) int64 {
	for _, c := range req.GetCandidates() {
		if c.GetAdId() == adID {
			return c.GetBidMicros()
		}
	}
	return -1
}

func trim(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// TestDiscovery changes the cluster: it adds a version, breaks the config,
// kills instances and shuts one down.
func TestDiscovery(t *testing.T) {
	c := startCluster(t, append(demoRankers, [2]string{"feed/v1", "models/feed/v1.json"})...)

	t.Run("a new version is discovered and can take production", func(t *testing.T) {
		start := time.Now()
		c.start("rankersvc", "--domain", "feed", "--version", "v3", "--model", "models/feed/v2.json", "--listen", "127.0.0.1:0")
		eventually(t, settle, func() error {
			code, out := c.get("/v1/domains")
			if code != http.StatusOK || !strings.Contains(string(out), `"version":"v3"`) {
				return fmt.Errorf("v3 not listed: %s", out)
			}
			return nil
		})
		t.Logf("v3 listed %v after its process started", time.Since(start))
		// From the KV write to routing: logged, not asserted (it depends on
		// the machine).
		c.putKV("adrank/domains/feed", `{"production": "v3"}`)
		took := eventually(t, settle, func() error {
			resp, err := rank(t, c, rankRequest("req-v3", "feed"))
			if err != nil {
				return err
			}
			if resp.GetModelVersion() != "v3" {
				return fmt.Errorf("served by %s", resp.GetModelVersion())
			}
			return nil
		})
		t.Logf("production switched to v3 in %v", took)
	})

	t.Run("the auction type follows Consul KV", func(t *testing.T) {
		req := rankRequest("req-auction", "stories")
		auction := c.proc("auctionsvc")
		for _, cfg := range []struct {
			value, want string
			rejected    bool
		}{
			{`{"type": "vcg", "position_factors": [1, 0.5, 0.25]}`, "vcg", false},
			{`{"type": "dutch"}`, "vcg", true}, // the last good config keeps serving
			{`{"type": "first_price", "reserve_micros": 1}`, "first_price", false},
		} {
			rejected := strings.Count(auction.out.String(), "config rejected")
			c.putKV("adrank/auction/stories", cfg.value)
			if cfg.rejected {
				// A rejected value changes nothing to wait for, but
				// auctionsvc says when it has read and refused it, and the
				// router's ListDomains says why.
				eventually(t, settle, func() error {
					if strings.Count(auction.out.String(), "config rejected") == rejected {
						return fmt.Errorf("auctionsvc has not refused %s yet", cfg.value)
					}
					if e := c.domains()["stories"].GetAuctionConfigError(); !strings.Contains(e, "unknown auction type") {
						return fmt.Errorf("stories' auction_config_error %q", e)
					}
					return nil
				})
			}
			eventually(t, settle, func() error {
				resp, err := rank(t, c, req)
				if err != nil {
					return err
				}
				if resp.GetAuctionType() != cfg.want {
					return fmt.Errorf("after %s: auction %q, want %q", cfg.value, resp.GetAuctionType(), cfg.want)
				}
				if cfg.want == "first_price" {
					for _, r := range resp.GetResults() {
						if r.GetPriceMicros() != bidOf(req, r.GetAdId()) {
							return fmt.Errorf("first price: %s pays %d", r.GetAdId(), r.GetPriceMicros())
						}
					}
				}
				return nil
			})
		}
		// Deleting the config keeps the last good one (first price, reserve
		// 1): a deletion must not turn the domain into a free, unreserved
		// GSP. auctionsvc says when it has seen the deletion.
		if _, err := c.consul.Client.KV().Delete("adrank/auction/stories", nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, settle, func() error {
			if !strings.Contains(auction.out.String(), "config deleted; the last good value keeps serving") {
				return fmt.Errorf("auctionsvc has not seen the deletion yet")
			}
			return nil
		})
		resp, err := rank(t, c, req)
		if err != nil || resp.GetAuctionType() != "first_price" || resp.GetResults()[0].GetReserveMicros() != 1 {
			t.Fatalf("after deleting the auction config: %v, %v", resp, err)
		}
		eventually(t, settle, func() error {
			if e := c.domains()["stories"].GetAuctionConfigError(); !strings.Contains(e, "deleted from Consul KV") {
				return fmt.Errorf("stories' auction_config_error %q", e)
			}
			return nil
		})
	})

	t.Run("an invalid config is rejected and the last good one keeps serving", func(t *testing.T) {
		for _, bad := range []struct{ value, err string }{
			{`{"production": `, "bad JSON"},
			{`{"production": "v9"}`, `"v9" is not registered`},
			{`{"production": "v1", "extra": 1}`, "unknown field"},
			{`{"production": ""}`, "production"},
		} {
			c.putKV("adrank/domains/feed", bad.value)
			eventually(t, settle, func() error {
				d := c.domains()["feed"]
				if !strings.Contains(d.GetConfigError(), bad.err) {
					return fmt.Errorf("config error %q, want it to mention %q", d.GetConfigError(), bad.err)
				}
				if d.GetProductionVersion() != "v3" {
					return fmt.Errorf("production %q, want the last good v3", d.GetProductionVersion())
				}
				return nil
			})
			resp, err := rank(t, c, rankRequest("req-bad-config", "feed"))
			if err != nil || resp.GetModelVersion() != "v3" {
				t.Fatalf("after %s: %v, version %q", bad.value, err, resp.GetModelVersion())
			}
		}
		// Deleting the config of a domain with live rankers keeps its last
		// good one serving, and says so: a mistaken delete does not take
		// the domain down.
		if _, err := c.consul.Client.KV().Delete("adrank/domains/feed", nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, settle, func() error {
			d := c.domains()["feed"]
			if !strings.Contains(d.GetConfigError(), "deleted from Consul KV") || d.GetProductionVersion() != "v3" {
				return fmt.Errorf("after deleting the config: production %q, error %q", d.GetProductionVersion(), d.GetConfigError())
			}
			return nil
		})
		if resp, err := rank(t, c, rankRequest("req-deleted-config", "feed")); err != nil || resp.GetModelVersion() != "v3" {
			t.Fatalf("after deleting the config: %v, %v", resp, err)
		}
		c.putKV("adrank/domains/feed", `{"production": "v1"}`)
		eventually(t, settle, func() error {
			d := c.domains()["feed"]
			if d.GetProductionVersion() != "v1" || d.GetConfigError() != "" {
				return fmt.Errorf("production %q error %q", d.GetProductionVersion(), d.GetConfigError())
			}
			return nil
		})
	})

	t.Run("a killed instance leaves routing and ranking goes on", func(t *testing.T) {
		insts := c.rankerInstances("feed", "v1", true)
		if len(insts) != 2 {
			t.Fatalf("%d healthy feed/v1 instances, want 2", len(insts))
		}
		victim := c.rankerOnPort(t, insts[0].Service.Port)
		start := time.Now()
		if err := victim.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		took := eventually(t, settle, func() error {
			if h := versionOf(c.domains()["feed"], "v1").GetHealthyInstances(); h != 1 {
				return fmt.Errorf("%d healthy feed/v1 instances", h)
			}
			return nil
		})
		t.Logf("killed instance dropped from routing in %v", took)
		for i := range 50 {
			if _, err := rank(t, c, rankRequest(fmt.Sprintf("req-after-kill-%d", i), "feed")); err != nil {
				t.Fatalf("rank %d after kill (%v after): %v", i, time.Since(start), err)
			}
		}
	})

	t.Run("SIGTERM: a ranker deregisters, drains and exits 0", func(t *testing.T) {
		p := c.startRanker("stories/v2", "models/stories/v1.json")
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.exitCode(t, 10*time.Second); code != 0 {
			t.Fatalf("exit code %d\n%s", code, p.out.String())
		}
		if n := len(c.rankerInstances("stories", "v2", false)); n != 0 {
			t.Errorf("%d stories/v2 instances still registered after shutdown", n)
		}
		for _, want := range []string{"deregistering", "drained"} {
			if !strings.Contains(p.out.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, p.out.String())
			}
		}
	})

	t.Run("featuresvc down: Rank answers from default features, flagged degraded", func(t *testing.T) {
		l := startLoad(c.router, 4, 2*time.Millisecond)
		// Counts, not times: 100 answers before the kill, 100 degraded ones
		// after it.
		eventually(t, settle, func() error {
			if s := l.seen(); s.ok+s.failed < 100 {
				return fmt.Errorf("%d calls so far", s.ok+s.failed)
			}
			return nil
		})
		if err := c.proc("featuresvc").cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		eventually(t, settle, func() error {
			if s := l.seen(); s.degraded < 100 {
				return fmt.Errorf("%d degraded answers so far", s.degraded)
			}
			return nil
		})
		r := l.stop()
		t.Logf("steady load across the kill: %d answered (%d degraded), %d failed; p99 %v", r.ok, r.degraded, r.failed, r.p99())
		if r.failed != 0 || r.degraded < 100 {
			t.Errorf("%d failed (first: %v), %d degraded: want no failure and degraded answers", r.failed, r.firstErr, r.degraded)
		}
		eventually(t, settle, func() error {
			resp, err := rank(t, c, rankRequest("req-degraded", "feed"))
			if err != nil {
				return err
			}
			if !resp.GetDegraded() {
				return fmt.Errorf("not degraded")
			}
			return nil
		})
		for i := range 20 {
			resp, err := rank(t, c, rankRequest(fmt.Sprintf("req-degraded-%d", i), "feed"))
			if err != nil || !resp.GetDegraded() || len(resp.GetResults()) != 3 {
				t.Fatalf("request %d: %v %v", i, resp, err)
			}
		}
	})

	t.Run("no healthy production instance is UNAVAILABLE (503)", func(t *testing.T) {
		insts := c.rankerInstances("stories", "v1", true)
		if len(insts) != 1 {
			t.Fatalf("%d stories/v1 instances", len(insts))
		}
		if err := c.rankerOnPort(t, insts[0].Service.Port).cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		eventually(t, settle, func() error {
			_, err := rank(t, c, rankRequest("req-stories", "stories"))
			if status.Code(err) != codes.Unavailable {
				return fmt.Errorf("got %v", err)
			}
			return nil
		})
		body, _ := protojson.Marshal(rankRequest("req-stories", "stories"))
		if code, out := c.post("/v1/rank", body); code != http.StatusServiceUnavailable {
			t.Errorf("REST: %d %s, want 503", code, out)
		}
	})
}

// proc returns the first process started as name.
func (c *cluster) proc(name string) *proc {
	c.t.Helper()
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	c.t.Fatalf("no %s process", name)
	return nil
}

// rankerOnPort returns the ranker process that logged it serves on port.
func (c *cluster) rankerOnPort(t *testing.T, port int) *proc {
	t.Helper()
	want := fmt.Sprintf(`"addr":"127.0.0.1:%d"`, port)
	for _, p := range c.procs {
		if p.name == "rankersvc" && strings.Contains(p.out.String(), want) {
			return p
		}
	}
	t.Fatalf("no ranker logged %s", want)
	return nil
}

// A corrupt or unsupported model file stops the ranker before it listens:
// it exits non-zero, names the problem, and never registers.
func TestRankerRefusesABadModel(t *testing.T) {
	c := &cluster{t: t, root: root(t)}
	c.consul = consultest.Start(t)
	dir := t.TempDir()
	tests := []struct{ name, content, want string }{
		{"truncated", `{"format": "logreg", "features": [`, "not a JSON model file"},
		{"unsupported", `{"format": "onnx"}`, `unsupported model format: "onnx"`},
		{"inconsistent", `{"format": "logreg", "features": ["a", "b"], "weights": [1], "intercept": 0, "impute": [0, 0]}`, "1 weights for 2 features"},
		// Loads, but could never serve: a typo names a feature the store
		// does not have (it would be missing on every request).
		{"a feature the store does not serve", `{"format": "logreg", "features": ["user_age", "usr_activity"], "weights": [0.1, 1], "intercept": -3, "impute": [30, 0.5]}`,
			"features the feature spec does not declare: usr_activity"},
		// Loads, but every score would overflow.
		{"leaves that overflow", `{"learner": {"feature_names": ["user_age"], "gradient_booster": {"name": "gbtree", "model": {"trees": [{"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0], "split_conditions": [30, 1e39, -1e39], "default_left": [1, 0, 0]}], "tree_info": [0]}}, "learner_model_param": {"base_score": "5E-1", "num_class": "0", "num_feature": "1", "num_target": "1"}, "objective": {"name": "binary:logistic"}}, "version": [1, 7, 4]}`,
			"leaf value 1e+39"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".json")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			p := c.start("rankersvc", "--domain", "feed", "--version", "bad", "--model", path)
			if code := p.exitCode(t, 10*time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1", code)
			}
			if !strings.Contains(p.out.String(), tt.want) {
				t.Errorf("output does not name the problem %q:\n%s", tt.want, p.out.String())
			}
			if n := len(c.rankerInstances("feed", "bad", false)); n != 0 {
				t.Errorf("%d instances registered", n)
			}
		})
	}
}

// `make run`'s script starts everything, answers, and leaves no process
// behind on SIGTERM. It runs on free ports, never the defaults.
func TestRunScript(t *testing.T) {
	r := root(t)
	ports, err := consultest.FreePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	cmd := exec.Command(filepath.Join(r, "scripts", "run.sh"))
	logDir := t.TempDir()
	cmd.Env = append(os.Environ(), fmt.Sprintf("KAFKA_PORT=%d", ports[7]),
		"CONSUL_ADDR="+addr(0), "ROUTER_ADDR="+addr(1), "GATEWAY_ADDR="+addr(2), "LOG_DIR="+logDir, "STATE_FILE="+filepath.Join(t.TempDir(), "router.db"), "SNAPSHOTS="+filepath.Join(t.TempDir(), "snapshots"), "EDGE_DIR="+filepath.Join(t.TempDir(), "edge"), "FEATURE_STORE="+filepath.Join(t.TempDir(), "features.db"), "TOKENS="+filepath.Join(logDir, "tokens"), "IMPRESSION_KEY="+filepath.Join(logDir, "impression.key"), "METRICS_PORT_BASE=",
		fmt.Sprintf("CONSUL_FLAGS=-grpc-port %d -serf-lan-port %d -serf-wan-port %d -server-port %d", ports[3], ports[4], ports[5], ports[6]))
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // to find every child afterwards
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("run.sh output:\n%s", out.String())
		}
	})
	gw := &cluster{t: t, gatewayURL: "http://" + addr(2)}
	eventually(t, 2*time.Minute, func() error { // run.sh waits up to 60 s for Consul, then 60 s for the gateway
		if !strings.Contains(out.String(), "Ctrl-C stops everything") {
			return fmt.Errorf("no banner yet")
		}
		body, _ := protojson.Marshal(rankRequest("req-run", "feed"))
		code, b, err := gw.tryDo(http.MethodPost, "/v1/rank", body)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("rank: %d %s %v", code, b, err)
		}
		return nil
	})
	for _, want := range []string{addr(1), "http://" + addr(2), "curl"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("banner lacks %q", want)
		}
	}
	// The batch job the script runs as a service scores feed, and the
	// router lists its snapshot.
	took := eventually(t, 2*time.Minute, func() error {
		code, b, err := gw.tryDo(http.MethodGet, "/v1/domains", nil)
		if err != nil || code != http.StatusOK || !strings.Contains(string(b), `"pairs":"5000000"`) {
			return fmt.Errorf("domains: %d %s %v", code, b, err)
		}
		return nil
	})
	t.Logf("feed's batch snapshot listed %v after the gateway answered", took)
	// The edge bundles the script builds are served.
	code, b, err := gw.tryDo(http.MethodGet, "/v1/edge/feed/manifest", nil)
	if err != nil || code != http.StatusOK || !strings.Contains(string(b), `"bundle_sha256"`) {
		t.Fatalf("edge manifest: %d %s %v", code, b, err)
	}
	// Who may do what: events need the events token, canary calls the
	// admin one; the script made both and printed them.
	tokens, err := os.ReadFile(filepath.Join(logDir, "tokens"))
	if err != nil {
		t.Fatal(err)
	}
	var events, admin string
	for _, line := range strings.Split(string(tokens), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "events" {
			events = f[1]
		} else if len(f) == 2 && f[0] == "admin" {
			admin = f[1]
		}
	}
	if events == "" || admin == "" || !strings.Contains(out.String(), events) {
		t.Fatalf("tokens %q, banner:\n%s", tokens, out.String())
	}
	post := func(path, token string) int {
		body := `{}`
		if path == "/v1/events" {
			body = `{"events": [{"impression_id": "nope", "type": "EVENT_TYPE_CLICK"}]}`
		}
		req, _ := http.NewRequest(http.MethodPost, gw.gatewayURL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/v1/events", "", http.StatusUnauthorized},
		{"/v1/events", "wrong-token-of-some-length", http.StatusUnauthorized},
		{"/v1/events", events, http.StatusOK},
		{"/v1/domains/feed/canary:promote", "", http.StatusUnauthorized},
		{"/v1/domains/feed/canary:promote", events, http.StatusForbidden},
		{"/v1/domains/feed/canary:promote", admin, http.StatusBadRequest}, // let in: there is no canary (FAILED_PRECONDITION)
	} {
		if got := post(tc.path, tc.token); got != tc.want {
			t.Errorf("POST %s with token %q: %d, want %d", tc.path, tc.token, got, tc.want)
		}
	}
	// featuresvc takes the same tokens: an online write needs the admin
	// one; the router's activity (the counters) carries the events one.
	putBody := `{"rows": [{"key": ["u42"], "values": {"user_activity": 0.25}}]}`
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {events, http.StatusForbidden}, {admin, http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodPost, gw.gatewayURL+"/v1/features/user:put", strings.NewReader(putBody))
		req.Header.Set("Content-Type", "application/json")
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("POST /v1/features/user:put with token %q: %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
	}
	counted := 0
	eventually(t, settle, func() error { // a request's impressions, counted by featuresvc
		counted++
		body, _ := protojson.Marshal(rankRequest(fmt.Sprintf("req-counted-%d", counted), "feed"))
		if code, b, err := gw.tryDo(http.MethodPost, "/v1/rank", body); err != nil || code != http.StatusOK {
			return fmt.Errorf("rank: %d %s %v", code, b, err)
		}
		time.Sleep(300 * time.Millisecond) // written within 100 ms, then sent
		code, b, err := gw.tryDo(http.MethodPost, "/v1/features:get", []byte(`{"user_id": "u42"}`))
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("features of u42: %d %s %v", code, b, err)
		}
		var fr featuresv1.GetFeaturesResponse
		if err := protojson.Unmarshal(b, &fr); err != nil {
			return err
		}
		if n := byName(fr.GetShared())["user_impressions_24h"]; n < 1 {
			router, _ := os.ReadFile(filepath.Join(logDir, "routersvc.log"))
			return fmt.Errorf("user_impressions_24h of u42: %v; router log:\n%s", n, lastLines(string(router), 8))
		}
		return nil
	})
	// A feature write through Kafka, as the banner shows it (kcat), is
	// served by featuresvc; a refused one goes to the dead-letter topic.
	kafka := fmt.Sprintf("127.0.0.1:%d", ports[7])
	for _, v := range []string{
		`{"entity":"user","rows":[{"key":["u42"],"values":{"user_activity":7}}]}`,
		`{"entity":"user","rows":[{"key":["u42"],"values":{"user_hist_ctr":0.375}}]}`,
	} {
		kc := exec.Command("kcat", "-b", kafka, "-P", "-t", "adrank.features", "-H", "content-type=application/json")
		kc.Stdin = strings.NewReader(v + "\n")
		if b, err := kc.CombinedOutput(); err != nil {
			t.Fatalf("kcat: %v %s", err, b)
		}
	}
	eventually(t, settle, func() error {
		code, b, err := gw.tryDo(http.MethodPost, "/v1/features:get", []byte(`{"user_id": "u42"}`))
		if err != nil || code != http.StatusOK || !strings.Contains(string(b), "0.375") {
			return fmt.Errorf("features of u42: %d %s %v", code, b, err)
		}
		return nil
	})
	eventually(t, settle, func() error {
		if dead := consumeCommitted(t, kafka, "adrank.deadletter"); len(dead) != 1 || !strings.Contains(dead[0], "user_activity") {
			return fmt.Errorf("dead letters %v, want the refused write", dead)
		}
		return nil
	})
	// Resilience, as the README claims it for this stack: kill -9 the
	// production ranker and the router; each is restarted by its
	// supervisor, and the stack answers again.
	for _, name := range []string{"ranker-feed-v1", "routersvc"} {
		pidOf := func() int {
			b, _ := os.ReadFile(filepath.Join(logDir, name+".pid"))
			n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return n
		}
		old := pidOf()
		if old == 0 {
			t.Fatalf("no pid file for %s", name)
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		took := eventually(t, 2*time.Minute, func() error {
			if p := pidOf(); p == old || p == 0 {
				return fmt.Errorf("%s not restarted yet", name)
			}
			body, _ := protojson.Marshal(rankRequest("req-after-"+name, "feed"))
			code, b, err := gw.tryDo(http.MethodPost, "/v1/rank", body)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("rank: %d %s %v", code, b, err)
			}
			return nil
		})
		t.Logf("%s killed with -9: restarted, and the stack answered again after %v", name, took)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("run.sh did not stop within 30s of SIGTERM")
	}
	// Nothing of the process group is left.
	if err := syscall.Kill(-cmd.Process.Pid, 0); err == nil || err != syscall.ESRCH {
		ps, _ := exec.Command("ps", "-o", "pid,args", "-g", fmt.Sprint(cmd.Process.Pid)).CombinedOutput()
		t.Errorf("processes left behind (%v):\n%s", err, ps)
	}
	if !strings.Contains(out.String(), "stopped.") {
		t.Errorf("no clean stop in output")
	}
}

// A second ranker registering another model under a version already served
// is not routed to: identical requests keep identical answers, and
// ListDomains says why.
func TestOneVersionServesOneModel(t *testing.T) {
	c := startCluster(t, [2]string{"feed/v1", "models/feed/v1.json"})
	req := rankRequest("one-model", "feed")
	first, err := rank(t, c, req)
	if err != nil {
		t.Fatal(err)
	}
	c.startRanker("feed/v1", "models/feed/v2lr.json")
	eventually(t, settle, func() error {
		v := versionOf(c.domains()["feed"], "v1")
		if !strings.Contains(v.GetModelConflict(), "registered another model") || v.GetHealthyInstances() != 1 {
			return fmt.Errorf("feed/v1: %v", v)
		}
		return nil
	})
	for range 20 {
		resp, err := rank(t, c, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetResults()[0].GetPctr() != first.GetResults()[0].GetPctr() {
			t.Fatalf("pCTR %v, then %v: the other model answered", first.GetResults()[0].GetPctr(), resp.GetResults()[0].GetPctr())
		}
	}
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
