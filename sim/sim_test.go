package sim

import (
	"context"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/ml/world"
)

// fake answers each request with candidates picked by pick, and keeps the
// requests it was sent.
type fake struct {
	pick func(n int) int
	mu   sync.Mutex
	reqs []*routerv1.RankRequest
}

func (f *fake) Rank(_ context.Context, in *routerv1.RankRequest, _ ...grpc.CallOption) (*routerv1.RankResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, in)
	resp := &routerv1.RankResponse{}
	for slot := range int(in.GetSlots()) {
		c := in.GetCandidates()[f.pick(len(in.GetCandidates()))-slot]
		resp.Results = append(resp.Results, &routerv1.Result{AdId: c.GetAdId(), Slot: int32(slot + 1), Version: "v", ImpressionId: in.GetRequestId() + c.GetAdId()})
	}
	return resp, nil
}

func (f *fake) ReportEvents(_ context.Context, in *routerv1.ReportEventsRequest, _ ...grpc.CallOption) (*routerv1.ReportEventsResponse, error) {
	return &routerv1.ReportEventsResponse{Accepted: int32(len(in.GetEvents()))}, nil
}

// A seed gives the same requests whatever the router answers, so that runs
// serving different versions compare request by request (simtest's exact
// interleaving power rests on it). The two fakes show different ads, so
// their users click differently.
func TestSameSeedSameRequests(t *testing.T) {
	w, err := world.New(world.Config{Seed: 1, Users: 50, Advertisers: 10, AdsPerDomain: 100, Domains: []string{"feed"}})
	if err != nil {
		t.Fatal(err)
	}
	first := &fake{pick: func(int) int { return 2 }}
	last := &fake{pick: func(n int) int { return n - 1 }}
	var clicks []int
	for _, f := range []*fake{first, last} {
		res, err := Run(context.Background(), f, w, Config{Domain: "feed", Requests: 300, Seed: 7, Keep: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Served) != 300 {
			t.Fatalf("kept %d requests, want 300", len(res.Served))
		}
		clicks = append(clicks, res.Clicks)
	}
	if clicks[0] == clicks[1] {
		t.Fatalf("both runs clicked %d times: the test needs runs whose clicks differ", clicks[0])
	}
	for i := range first.reqs {
		if !proto.Equal(first.reqs[i], last.reqs[i]) {
			t.Fatalf("request %d differs between the runs:\n%v\n%v", i, first.reqs[i], last.reqs[i])
		}
	}
}
