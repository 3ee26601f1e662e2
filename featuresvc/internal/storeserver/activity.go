package storeserver

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/adrank/adrank/featuresvc/internal/store"
	"github.com/adrank/adrank/featuresvc/internal/table"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/ml/featurespec"
)

// Bounds of RecordActivity.
const (
	MaxActivity = 10_000
	// maxAhead is how far ahead of this clock an activity's time may be.
	maxAhead = 5 * time.Minute
	maxCount = 1_000_000 // impressions or clicks in one activity
)

// RecordActivity implements FeatureService: it counts each activity for
// its user, its ad and, through the ad's category, each cross with
// counters. The whole request is validated first.
func (s *Server) RecordActivity(ctx context.Context, req *featuresv1.RecordActivityRequest) (*featuresv1.RecordActivityResponse, error) {
	acts := req.GetActivity()
	if n := len(acts); n == 0 || n > MaxActivity {
		return nil, status.Errorf(codes.InvalidArgument, "activity: %d entries, want 1 to %d", n, MaxActivity)
	}
	now := s.now()
	for i, a := range acts {
		switch {
		case a.GetUserId() == "" || len(a.GetUserId()) > featurespec.MaxKeyBytes:
			return nil, status.Errorf(codes.InvalidArgument, "activity[%d].user_id: %d bytes, want 1 to %d", i, len(a.GetUserId()), featurespec.MaxKeyBytes)
		case a.GetAdId() == "" || len(a.GetAdId()) > featurespec.MaxKeyBytes:
			return nil, status.Errorf(codes.InvalidArgument, "activity[%d].ad_id: %d bytes, want 1 to %d", i, len(a.GetAdId()), featurespec.MaxKeyBytes)
		case a.GetImpressions() > maxCount || a.GetClicks() > maxCount:
			return nil, status.Errorf(codes.InvalidArgument, "activity[%d]: at most %d impressions or clicks", i, maxCount)
		case a.GetTime() == nil:
			return nil, status.Errorf(codes.InvalidArgument, "activity[%d].time: is required", i)
		}
		if err := a.GetTime().CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "activity[%d].time: %v", i, err)
		}
		if t := a.GetTime().AsTime(); t.After(now.Add(maxAhead)) {
			return nil, status.Errorf(codes.InvalidArgument, "activity[%d].time: %s is more than %s ahead of this clock", i, t.Format(time.RFC3339), maxAhead)
		}
	}
	// The ads' categories, for the crosses' counters: one lookup.
	var arows []store.Row
	var afound []bool
	if len(s.crosses) > 0 {
		view, err := s.st.View(ctx)
		if err != nil {
			return nil, storeError(err)
		}
		adIDs := make([]string, len(acts))
		for i, a := range acts {
			adIDs[i] = a.GetAdId()
		}
		arows, afound = make([]store.Row, len(acts)), make([]bool, len(acts))
		if err := view.Get(ctx, featurespec.Ad, adIDs, arows, afound); err != nil {
			return nil, storeError(err)
		}
	}
	var dropped uint64
	count := func(entity, key string, at time.Time, imps, clicks uint32) {
		if set := s.counters[entity]; set != nil {
			if !set.Add(key, at, imps, clicks) {
				dropped++
			}
		}
	}
	for i, a := range acts {
		at, imps, clicks := a.GetTime().AsTime(), a.GetImpressions(), a.GetClicks()
		count(featurespec.User, a.GetUserId(), at, imps, clicks)
		count(featurespec.Ad, a.GetAdId(), at, imps, clicks)
		if len(s.crosses) == 0 || !afound[i] {
			continue
		}
		for _, x := range s.crosses {
			if cat := arows[i].Strs[x.of]; cat != "" && x.counters != nil {
				count(x.name, table.Key(a.GetUserId(), cat), at, imps, clicks)
			}
		}
	}
	return &featuresv1.RecordActivityResponse{Dropped: dropped}, nil
}

// RunSweeper forgets idle counter keys every interval until ctx ends.
func (s *Server) RunSweeper(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			for _, set := range s.counters {
				set.Sweep(s.now())
			}
		}
	}
}
