package router

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/assign"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/routersvc/internal/core"
)

var sha = strings.Repeat("ab", 32)

func edgeRouter(t *testing.T) routerv1.RouterServiceClient {
	v1 := inst("feed", "v1", true)
	v1.Meta[consulx.MetaModelSHA256] = sha
	return serve(t, &fakeDown{}, []discovery.Instance{v1}, map[string]string{"feed": `{"production": "v1"}`})
}

func edgeServed(req, user string) *routerv1.EdgeServed {
	return &routerv1.EdgeServed{RequestId: req, UserId: user, Version: "v1", ModelSha256: sha, Results: []*routerv1.EdgeResult{
		{AdId: "ad1", Slot: 1, PriceMicros: 500, ImpressionId: assign.ImpressionID("feed", user, req, "ad1", 1)},
	}}
}

func TestReportEdgeImpressions(t *testing.T) {
	client := edgeRouter(t)
	ctx := context.Background()
	forged := edgeServed("e3", "u1")
	forged.Results[0].ImpressionId = strings.Repeat("0", 32)
	unknownModel := edgeServed("e4", "u1")
	unknownModel.ModelSha256 = strings.Repeat("cd", 32)
	otherArm := edgeServed("e5", "u1")
	otherArm.Version = "v9"
	req := &routerv1.ReportEdgeImpressionsRequest{Domain: "feed", Served: []*routerv1.EdgeServed{edgeServed("e1", "u1"), edgeServed("e2", "u2"), forged, unknownModel, otherArm}}
	resp, err := client.ReportEdgeImpressions(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	first := resp
	want := []routerv1.EventResult{routerv1.EventResult_EVENT_RESULT_ACCEPTED, routerv1.EventResult_EVENT_RESULT_ACCEPTED,
		routerv1.EventResult_EVENT_RESULT_REJECTED, routerv1.EventResult_EVENT_RESULT_REJECTED, routerv1.EventResult_EVENT_RESULT_REJECTED}
	says := []string{"", "", "impression_id", "is not the one this router serves", "is not the one this router serves"}
	for i, r := range resp.GetResults() {
		if r.GetResult() != want[i] || !strings.Contains(r.GetReason(), says[i]) {
			t.Errorf("served %d: %v %q, want %v saying %q", i, r.GetResult(), r.GetReason(), want[i], says[i])
		}
	}
	if resp.GetAccepted() != 2 || resp.GetRejected() != 3 {
		t.Fatalf("counts %v", resp)
	}
	// Sent again: counted once.
	resp, err = client.ReportEdgeImpressions(ctx, &routerv1.ReportEdgeImpressionsRequest{Domain: "feed", Served: []*routerv1.EdgeServed{edgeServed("e1", "u1")}})
	if err != nil || resp.GetDuplicates() != 1 || resp.GetAccepted() != 0 {
		t.Fatalf("resent: %v, %v", resp, err)
	}
	// The router hands back its signed IDs, also for a duplicate; rejected
	// requests get none.
	device := assign.ImpressionID("feed", "u1", "e1", "ad1", 1)
	if got := resp.GetResults()[0].GetImpressionIds(); len(got) != 1 || got[0] != testKeys.Sign(core.EdgeImpressionPrefix+device) {
		t.Fatalf("signed IDs %v, want [%s]", got, testKeys.Sign(core.EdgeImpressionPrefix+device))
	}
	signed := first.GetResults()[1].GetImpressionIds()
	if len(signed) != 1 || len(first.GetResults()[2].GetImpressionIds()) != 0 {
		t.Fatalf("signed IDs %v, %v", signed, first.GetResults()[2].GetImpressionIds())
	}
	// A click with the device's own, unsigned ID is refused as forged; with
	// the signed ID it joins the impression.
	click := func(id string) *routerv1.ReportEventsResponse {
		t.Helper()
		ev, err := client.ReportEvents(ctx, &routerv1.ReportEventsRequest{Events: []*routerv1.Event{{ImpressionId: id, Type: routerv1.EventType_EVENT_TYPE_CLICK}}})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	if ev := click(assign.ImpressionID("feed", "u2", "e2", "ad1", 1)); ev.GetRejected() != 1 {
		t.Fatalf("click with the device's ID: %v", ev)
	}
	if ev := click(signed[0]); ev.GetAccepted() != 1 {
		t.Fatalf("click with the signed ID: %v", ev)
	}
	rep, err := client.GetExperimentReport(ctx, &routerv1.GetExperimentReportRequest{Domain: "feed"})
	if err != nil || rep.GetEdgeImpressionsRejected() != 3 || rep.GetEventsForged() != 1 {
		t.Fatalf("report: edge rejected %v (want 3), events forged %v (want 1), %v", rep.GetEdgeImpressionsRejected(), rep.GetEventsForged(), err)
	}
}

func TestReportEdgeImpressionsRefusesMalformed(t *testing.T) {
	client := edgeRouter(t)
	for _, tc := range []struct {
		field string
		edit  func(*routerv1.EdgeServed)
	}{
		{"served[0].request_id", func(s *routerv1.EdgeServed) { s.RequestId = "" }},
		{"served[0].user_id", func(s *routerv1.EdgeServed) { s.UserId = strings.Repeat("u", 300) }},
		{"served[0].model_sha256", func(s *routerv1.EdgeServed) { s.ModelSha256 = "xyz" }},
		{"served[0].results", func(s *routerv1.EdgeServed) { s.Results = nil }},
		{"served[0].results[0].slot", func(s *routerv1.EdgeServed) { s.Results[0].Slot = 0 }},
		{"served[0].results[0].price_micros", func(s *routerv1.EdgeServed) { s.Results[0].PriceMicros = -1 }},
		{"served[0].results[0].impression_id", func(s *routerv1.EdgeServed) { s.Results[0].ImpressionId = "nope" }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			s := edgeServed("m1", "u1")
			tc.edit(s)
			_, err := client.ReportEdgeImpressions(context.Background(), &routerv1.ReportEdgeImpressionsRequest{Domain: "feed", Served: []*routerv1.EdgeServed{s}})
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.field) {
				t.Fatalf("err %v, want InvalidArgument naming %s", err, tc.field)
			}
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok && br.GetFieldViolations()[0].GetField() == tc.field {
					return
				}
			}
			t.Fatalf("no BadRequest naming %s in %v", tc.field, st.Details())
		})
	}
	// Nothing of a refused batch is recorded: the good request in it can be
	// sent on its own and is new.
	bad := edgeServed("m2", "u1")
	bad.Results[0].Slot = -1
	if _, err := client.ReportEdgeImpressions(context.Background(), &routerv1.ReportEdgeImpressionsRequest{Domain: "feed", Served: []*routerv1.EdgeServed{edgeServed("ok1", "u1"), bad}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("mixed batch: %v", err)
	}
	resp, err := client.ReportEdgeImpressions(context.Background(), &routerv1.ReportEdgeImpressionsRequest{Domain: "feed", Served: []*routerv1.EdgeServed{edgeServed("ok1", "u1")}})
	if err != nil || resp.GetAccepted() != 1 {
		t.Fatalf("after a refused batch: %v, %v", resp, err)
	}
}

func TestEdgePlanAndFeatures(t *testing.T) {
	client := edgeRouter(t)
	plan, err := client.GetEdgePlan(context.Background(), &routerv1.GetEdgePlanRequest{Domain: "feed"})
	if err != nil || plan.GetProductionVersion() != "v1" || plan.GetModelSha256()["v1"] != sha {
		t.Fatalf("plan %v, %v", plan, err)
	}
	if _, err := client.GetEdgePlan(context.Background(), &routerv1.GetEdgePlanRequest{Domain: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown domain: %v", err)
	}
	f, err := client.GetEdgeFeatures(context.Background(), &routerv1.GetEdgeFeaturesRequest{Domain: "feed", UserId: "u1", AdIds: []string{"ad1", "ad2"}})
	if err != nil || len(f.GetAds()) != 2 || f.GetAds()[1].GetAdId() != "ad2" {
		t.Fatalf("features %v, %v", f, err)
	}
	if _, err := client.GetEdgeFeatures(context.Background(), &routerv1.GetEdgeFeaturesRequest{Domain: "feed", UserId: "u1"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no ads: %v", err)
	}
}

// A device that reports an online request as its own (its request ID, user,
// ad and slot) gets no signature of the online impression, only of an edge
// impression of its own, and displaces nothing: the online impression still
// takes its click.
func TestEdgeReportCannotSignOnlineImpressions(t *testing.T) {
	client := edgeRouter(t)
	ctx := context.Background()
	online, err := client.Rank(ctx, request())
	if err != nil {
		t.Fatal(err)
	}
	r := online.GetResults()[0]
	fake := &routerv1.EdgeServed{RequestId: "r1", UserId: "u1", Version: "v1", ModelSha256: sha, Results: []*routerv1.EdgeResult{
		{AdId: r.GetAdId(), Slot: r.GetSlot(), PriceMicros: r.GetPriceMicros(), ImpressionId: assign.ImpressionID("feed", "u1", "r1", r.GetAdId(), int(r.GetSlot()))},
	}}
	resp, err := client.ReportEdgeImpressions(ctx, &routerv1.ReportEdgeImpressionsRequest{Domain: "feed", Served: []*routerv1.EdgeServed{fake}})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetResults()[0].GetImpressionIds()
	if len(got) != 1 || got[0] == r.GetImpressionId() {
		t.Fatalf("the edge report handed out %v; the online ID is %s", got, r.GetImpressionId())
	}
	ev, err := client.ReportEvents(ctx, &routerv1.ReportEventsRequest{Events: []*routerv1.Event{{ImpressionId: r.GetImpressionId(), Type: routerv1.EventType_EVENT_TYPE_CLICK}}})
	if err != nil || ev.GetResults()[0] != routerv1.EventResult_EVENT_RESULT_ACCEPTED {
		t.Fatalf("a click on the online impression after the edge report: %v, %v; want accepted", ev, err)
	}
}
