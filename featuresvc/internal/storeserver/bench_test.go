package storeserver

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/adrank/adrank/featuresvc/internal/features"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/ml/world"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkGetFeatures is one user and 100 ads, as the router asks: from the
// store (with counters that have activity), and from the world directly.
func BenchmarkGetFeatures(b *testing.B) {
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	s, _ := demoServer(b, w)
	req := &featuresv1.GetFeaturesRequest{UserId: "u42", Context: &featuresv1.RequestContext{Timestamp: timestamppb.New(time.Now()), Device: "mobile", Query: "sports shoes"}}
	var acts []*featuresv1.Activity
	for i := range 100 {
		id := fmt.Sprintf("ad%d", i*7+1)
		req.AdIds = append(req.AdIds, id)
		acts = append(acts, &featuresv1.Activity{UserId: "u42", AdId: id, Impressions: 1, Time: timestamppb.Now()})
	}
	if _, err := s.RecordActivity(context.Background(), &featuresv1.RecordActivityRequest{Activity: acts}); err != nil {
		b.Fatal(err)
	}
	for name, srv := range map[string]featuresv1.FeatureServiceServer{"store": s, "world": features.NewServer(w)} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := srv.GetFeatures(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
