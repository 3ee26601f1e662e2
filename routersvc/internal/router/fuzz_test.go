package router

import (
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/routersvc/internal/core"
)

// fuzzJSON decodes REST JSON as the gateway does and validates it: no input
// panics, and a rejection is always INVALID_ARGUMENT with a message that
// names a field. It reports whether the input was accepted.
func fuzzJSON(t *testing.T, data []byte, msg proto.Message, validate func() error) bool {
	if err := (protojson.UnmarshalOptions{}).Unmarshal(data, msg); err != nil {
		return false // the gateway answers 400 for undecodable JSON
	}
	err := validate()
	if err == nil {
		return true
	}
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || st.Message() == "" {
		t.Fatalf("validation error %v, want INVALID_ARGUMENT naming a field", err)
	}
	return false
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

// clean is the property every accepted string has: bounded, valid UTF-8,
// no control characters and no bidi controls (written apart from the
// validator, so that it checks it).
func clean(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return false
		}
	}
	return true
}

// acceptedRank checks that an accepted request has every string clean and
// every number within its bound.
func acceptedRank(t *testing.T, req *routerv1.RankRequest) {
	strs := []string{req.GetRequestId(), req.GetUserId(), req.GetDomain(), req.GetContext().GetCountry()}
	for _, c := range req.GetCandidates() {
		strs = append(strs, c.GetAdId(), c.GetAdvertiserId())
		if b := c.GetBidMicros(); b < 1 || b > core.MaxBidMicros {
			t.Fatalf("accepted bid %d", b)
		}
		if q := c.GetQuality(); !(q >= 0 && q <= core.MaxQuality) {
			t.Fatalf("accepted quality %v", q)
		}
	}
	for _, s := range strs {
		if !clean(s, core.MaxIDLength) {
			t.Fatalf("accepted string %q", s)
		}
	}
	if !clean(req.GetContext().GetQuery(), core.MaxQueryLength) {
		t.Fatalf("accepted query %q", req.GetContext().GetQuery())
	}
	if r := req.GetReserveMicros(); r < 0 || r > core.MaxBidMicros {
		t.Fatalf("accepted reserve %d", r)
	}
}

func FuzzRankRequestJSON(f *testing.F) {
	f.Add([]byte(`{"user_id": "u1", "domain": "feed", "slots": 2, "candidates": [{"ad_id": "a", "bid_micros": 5}]}`))
	f.Add([]byte(`{"user_id": "u\u0000", "domain": "feed\u202e", "slots": 1, "candidates": [{"ad_id": "a\u0085", "advertiser_id": "\u2066", "bid_micros": "1000000000001"}], "context": {"query": "q\n", "country": "US\u200f"}}`))
	f.Add([]byte(`{"user_id": "u1", "domain": "feed", "slots": 0, "candidates": [{"ad_id": "a"}, {"ad_id": "a", "quality": -1}], "context": {"timestamp": "2026-11-25T12:00:00Z", "device": 9}}`))
	f.Add([]byte(`{"reserve_micros": "-1", "candidates": []}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &routerv1.RankRequest{}
		if fuzzJSON(t, data, req, func() error { return validate(req) }) {
			acceptedRank(t, req)
		}
	})
}

func FuzzEventsJSON(f *testing.F) {
	f.Add([]byte(`{"events": [{"impression_id": "i", "type": "EVENT_TYPE_CLICK"}]}`))
	f.Add([]byte(`{"events": [{"impression_id": "", "type": "EVENT_TYPE_CONVERSION", "value": -1, "event_id": "e"}, {"type": 7}]}`))
	f.Add([]byte(`{"events": [{"impression_id": "i\u0007", "type": "EVENT_TYPE_CONVERSION", "value": 1.7e308, "event_id": "\u202a"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &routerv1.ReportEventsRequest{}
		if fuzzJSON(t, data, req, func() error { return validateEvents(req) }) {
			for _, e := range req.GetEvents() {
				if !clean(e.GetImpressionId(), core.MaxIDLength) || !clean(e.GetEventId(), core.MaxIDLength) {
					t.Fatalf("accepted IDs %q, %q", e.GetImpressionId(), e.GetEventId())
				}
				if v := e.GetValue(); !(v >= 0 && v <= core.MaxConversionValue) {
					t.Fatalf("accepted value %v", v)
				}
			}
		}
	})
}
