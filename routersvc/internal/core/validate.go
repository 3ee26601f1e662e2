package core

import (
	"fmt"
	"math"
)

// Limits on a request.
const (
	MaxCandidates  = 1000
	MaxSlots       = 100
	MaxIDLength    = 256 // the request ID header's bound too (grpcx.MaxRequestIDLength)
	MaxQueryLength = 1024
	MaxQuality     = 1e6
	MaxEvents      = 1000
)

// Validate checks a Rank request's fields; field names are the API's
// (proto and JSON) names.
func Validate(req *Request) error {
	var v violations
	if len(req.RequestID) > MaxIDLength {
		v.add("request_id", "longer than %d bytes", MaxIDLength)
	}
	switch {
	case req.UserID == "":
		v.add("user_id", "is required")
	case len(req.UserID) > MaxIDLength:
		v.add("user_id", "longer than %d bytes", MaxIDLength)
	}
	if req.Domain == "" {
		v.add("domain", "is required")
	}
	if s := req.Slots; s < 1 || s > MaxSlots {
		v.add("slots", "is %d, want 1 to %d", s, MaxSlots)
	}
	if r := req.ReserveMicros; r < 0 {
		v.add("reserve_micros", "is %d, want >= 0", r)
	}
	c := req.Context
	if t := c.Timestamp; !t.IsZero() && (t.Year() < 1 || t.Year() > 9999) {
		v.add("context.timestamp", "%v is outside years 1 to 9999", t)
	}
	if c.Device < DeviceUnspecified || c.Device > DeviceTablet {
		v.add("context.device", "unknown device %d", c.Device)
	}
	if len(c.Query) > MaxQueryLength {
		v.add("context.query", "longer than %d bytes", MaxQueryLength)
	}
	switch n := len(req.Candidates); {
	case n == 0:
		v.add("candidates", "at least one candidate is required")
	case n > MaxCandidates:
		v.add("candidates", "%d candidates, at most %d", n, MaxCandidates)
	default:
		seen := make(map[string]int, n)
		for i, c := range req.Candidates {
			f := fmt.Sprintf("candidates[%d]", i)
			switch id := c.AdID; {
			case id == "":
				v.add(f+".ad_id", "is required")
			case len(id) > MaxIDLength:
				v.add(f+".ad_id", "longer than %d bytes", MaxIDLength)
			default:
				if j, dup := seen[id]; dup {
					v.add(f+".ad_id", "duplicate ad_id %q (also candidates[%d])", id, j)
				}
				seen[id] = i
			}
			if b := c.BidMicros; b <= 0 {
				v.add(f+".bid_micros", "is %d, want > 0", b)
			}
			if q := c.Quality; !(q >= 0 && q <= MaxQuality) {
				v.add(f+".quality", "is %v, want within [0, %g]", q, MaxQuality)
			}
		}
	}
	return v.err()
}

// EventType is what happened to an impression.
type EventType int

// Event types.
const (
	EventUnspecified EventType = iota
	EventClick
	EventConversion
)

// Event is feedback on one impression.
type Event struct {
	ImpressionID string
	Type         EventType
	// Value is a conversion's value (a click has none).
	Value float64
	// EventID tells resent events apart from new ones ("" for one event of
	// its type per impression).
	EventID string
}

// ValidateEvents checks a batch of events.
func ValidateEvents(events []Event) error {
	var v violations
	switch n := len(events); {
	case n == 0:
		v.add("events", "at least one event is required")
	case n > MaxEvents:
		v.add("events", "%d events, at most %d", n, MaxEvents)
	}
	for i, e := range events {
		f := fmt.Sprintf("events[%d]", i)
		if e.ImpressionID == "" || len(e.ImpressionID) > MaxIDLength {
			v.add(f+".impression_id", "is required, at most %d bytes", MaxIDLength)
		}
		switch e.Type {
		case EventClick:
			if e.Value != 0 {
				v.add(f+".value", "a click has no value")
			}
		case EventConversion:
			if val := e.Value; !(val >= 0) || math.IsInf(val, 0) {
				v.add(f+".value", "is %v, want a finite value >= 0", val)
			}
		default:
			v.add(f+".type", "want EVENT_TYPE_CLICK or EVENT_TYPE_CONVERSION")
		}
		if len(e.EventID) > MaxIDLength {
			v.add(f+".event_id", "longer than %d bytes", MaxIDLength)
		}
	}
	return v.err()
}
