package router

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/routersvc/internal/core"
)

// fuzzJSON decodes REST JSON as the gateway does and validates it: no input
// panics, and a rejection is always INVALID_ARGUMENT with a message that
// names a field.
func fuzzJSON(t *testing.T, data []byte, msg proto.Message, validate func() error) {
	if err := (protojson.UnmarshalOptions{}).Unmarshal(data, msg); err != nil {
		return // the gateway answers 400 for undecodable JSON
	}
	err := validate()
	if err == nil {
		return
	}
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || st.Message() == "" {
		t.Fatalf("validation error %v, want INVALID_ARGUMENT naming a field", err)
	}
}

// validate checks a Rank request as Rank does, before it calls the core.
func validate(req *routerv1.RankRequest) error {
	r, err := Request(req)
	if err != nil {
		return err
	}
	return Status(core.Validate(r))
}

func validateEvents(req *routerv1.ReportEventsRequest) error {
	return Status(core.ValidateEvents(Events(req)))
}

func FuzzRankRequestJSON(f *testing.F) {
	f.Add([]byte(`{"user_id": "u1", "domain": "feed", "slots": 2, "candidates": [{"ad_id": "a", "bid_micros": 5}]}`))
	f.Add([]byte(`{"user_id": "u1", "domain": "feed", "slots": 0, "candidates": [{"ad_id": "a"}, {"ad_id": "a", "quality": -1}], "context": {"timestamp": "2026-11-25T12:00:00Z", "device": 9}}`))
	f.Add([]byte(`{"reserve_micros": "-1", "candidates": []}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &routerv1.RankRequest{}
		fuzzJSON(t, data, req, func() error { return validate(req) })
	})
}

func FuzzEventsJSON(f *testing.F) {
	f.Add([]byte(`{"events": [{"impression_id": "i", "type": "EVENT_TYPE_CLICK"}]}`))
	f.Add([]byte(`{"events": [{"impression_id": "", "type": "EVENT_TYPE_CONVERSION", "value": -1, "event_id": "e"}, {"type": 7}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &routerv1.ReportEventsRequest{}
		fuzzJSON(t, data, req, func() error { return validateEvents(req) })
	})
}
