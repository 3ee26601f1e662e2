package features

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/ml/world"
)

func TestGetFeatures(t *testing.T) {
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(w)
	ctx := &featuresv1.RequestContext{Timestamp: timestamppb.New(time.Date(2026, 1, 1, 6, 0, 0, 0, time.UTC)), Device: "tablet", Query: "sports"}

	resp, err := s.GetFeatures(context.Background(), &featuresv1.GetFeaturesRequest{UserId: "u7", AdIds: []string{"ad3", "new-ad"}, Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetUserKnown() || resp.GetShared()[world.FUserAge] == 0 || resp.GetShared()[world.FTablet] != 1 {
		t.Errorf("shared %v", resp.GetShared())
	}
	if a := resp.GetAds()[0]; !a.GetKnown() || a.GetAdId() != "ad3" || len(a.GetFeatures()) != 4 {
		t.Errorf("known ad %v", a)
	}
	if a := resp.GetAds()[1]; a.GetKnown() || a.GetAdId() != "new-ad" || len(a.GetFeatures()) != 0 {
		t.Errorf("new ad %v", a)
	}

	cold, err := s.GetFeatures(context.Background(), &featuresv1.GetFeaturesRequest{UserId: "stranger", AdIds: []string{"ad3"}})
	if err != nil {
		t.Fatal(err)
	}
	if cold.GetUserKnown() {
		t.Error("stranger is known")
	}
	if _, ok := cold.GetShared()[world.FUserAge]; ok {
		t.Error("unknown user has user features")
	}
	if _, ok := cold.GetAds()[0].GetFeatures()[world.FUserAdInterest]; ok {
		t.Error("unknown user has user x ad features")
	}
}

func TestGetFeaturesRejects(t *testing.T) {
	w, _ := world.New(world.DefaultConfig())
	s := NewServer(w)
	tests := []struct {
		name string
		req  *featuresv1.GetFeaturesRequest
	}{
		{"unknown device", &featuresv1.GetFeaturesRequest{Context: &featuresv1.RequestContext{Device: "fridge"}}},
		{"bad timestamp", &featuresv1.GetFeaturesRequest{Context: &featuresv1.RequestContext{Timestamp: &timestamppb.Timestamp{Nanos: -1}}}},
		{"too many ads", &featuresv1.GetFeaturesRequest{AdIds: make([]string, MaxAds+1)}},
	}
	for _, tt := range tests {
		if _, err := s.GetFeatures(context.Background(), tt.req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", tt.name, err)
		}
	}
}
