package features

import (
	"context"
	"maps"
	"math"
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
	if !resp.GetUserKnown() {
		t.Error("u7 is not known")
	}
	// The dense rows hold exactly what the world computes, NaN where it
	// computes nothing.
	u, _ := w.User("u7")
	a3, _ := w.Ad("ad3")
	c, _ := Context(ctx)
	shared := world.ContextFeatures(c)
	maps.Copy(shared, world.UserFeatures(u))
	checkRow(t, "shared", resp.GetShared(), 0, shared)
	checkRow(t, "ad3", resp.GetAdFeatures(), 0, world.AdFeatures(u, a3, c))
	checkRow(t, "new-ad", resp.GetAdFeatures(), 1, nil)
	if a := resp.GetAds()[0]; !a.GetKnown() || a.GetAdId() != "ad3" {
		t.Errorf("known ad %v", a)
	}
	if a := resp.GetAds()[1]; a.GetKnown() || a.GetAdId() != "new-ad" {
		t.Errorf("new ad %v", a)
	}

	cold, err := s.GetFeatures(context.Background(), &featuresv1.GetFeaturesRequest{UserId: "stranger", AdIds: []string{"ad3"}})
	if err != nil {
		t.Fatal(err)
	}
	if cold.GetUserKnown() {
		t.Error("stranger is known")
	}
	checkRow(t, "stranger shared", cold.GetShared(), 0, world.ContextFeatures(world.Context{}))
	checkRow(t, "ad3 for a stranger", cold.GetAdFeatures(), 0, world.AdFeatures(nil, a3, world.Context{}))
	if _, ok := world.AdFeatures(nil, a3, world.Context{})[world.FUserAdInterest]; ok {
		t.Error("unknown user has user x ad features")
	}
}

// checkRow compares row r of tab with want: every column present in want
// holds its value, every other column is NaN.
func checkRow(t *testing.T, what string, tab *featuresv1.FeatureTable, r int, want map[string]float64) {
	t.Helper()
	names := tab.GetNames()
	if len(tab.GetValues()) != int(tab.GetRows())*len(names) || r >= int(tab.GetRows()) {
		t.Fatalf("%s: %d values for %d rows of %d columns", what, len(tab.GetValues()), tab.GetRows(), len(names))
	}
	got := map[string]float64{}
	for j, n := range names {
		if v := tab.GetValues()[r*len(names)+j]; !math.IsNaN(v) {
			got[n] = v
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %v, want %v", what, got, want)
	}
	for n, v := range want {
		if got[n] != v {
			t.Errorf("%s: %s = %v, want %v", what, n, got[n], v)
		}
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
