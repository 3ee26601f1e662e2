package core

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Limits on a request.
const (
	MaxCandidates  = 1000
	MaxSlots       = 100
	MaxIDLength    = 256 // the request ID header's bound too (grpcx.MaxRequestIDLength)
	MaxQueryLength = 1024
	MaxQuality     = 1e6
	MaxEvents      = 1000
	// MaxBidMicros bounds bids and reserves (a million currency units per
	// click), so that every price and sum stays exact and finite.
	MaxBidMicros = 1_000_000_000_000
	// MaxConversionValue bounds one conversion's value, so that no sum of
	// values can overflow.
	MaxConversionValue = 1e9
)

// badText says what is wrong with a caller's string, "" if nothing: it
// must be UTF-8 without control characters (NUL, C0, DEL, C1) or bidi
// controls (which could make what is logged or shown read otherwise).
func badText(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		switch {
		case r < 0x20, r >= 0x7f && r < 0xa0:
			return fmt.Sprintf("holds the control character %U", r)
		case unicode.Is(unicode.Bidi_Control, r), r == 0xfeff:
			return fmt.Sprintf("holds the bidi or invisible control %U", r)
		}
	}
	return ""
}

// checkID adds a violation for an ID that is too long or holds characters
// no ID may hold; required: empty is a violation too.
func (v *violations) checkID(field, s string, required bool) {
	switch {
	case s == "" && required:
		v.add(field, "is required")
	case len(s) > MaxIDLength:
		v.add(field, "longer than %d bytes", MaxIDLength)
	default:
		if why := badText(s); why != "" {
			v.add(field, "%s", why)
		}
	}
}

// Validate checks a Rank request's fields; field names are the API's
// (proto and JSON) names.
func Validate(req *Request) error {
	var v violations
	v.checkID("request_id", req.RequestID, false)
	v.checkID("user_id", req.UserID, true)
	v.checkID("domain", req.Domain, true)
	if s := req.Slots; s < 1 || s > MaxSlots {
		v.add("slots", "is %d, want 1 to %d", s, MaxSlots)
	}
	if r := req.ReserveMicros; r < 0 || r > MaxBidMicros {
		v.add("reserve_micros", "is %d, want 0 to %d", r, int64(MaxBidMicros))
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
	} else if why := badText(c.Query); why != "" {
		v.add("context.query", "%s", why)
	}
	if len(c.Country) > MaxIDLength {
		v.add("context.country", "longer than %d bytes", MaxIDLength)
	} else if why := badText(c.Country); why != "" {
		v.add("context.country", "%s", why)
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
			n := len(v)
			v.checkID(f+".ad_id", c.AdID, true)
			if len(v) == n {
				if j, dup := seen[c.AdID]; dup {
					v.add(f+".ad_id", "duplicate ad_id %q (also candidates[%d])", c.AdID, j)
				}
				seen[c.AdID] = i
			}
			v.checkID(f+".advertiser_id", c.AdvertiserID, false)
			if b := c.BidMicros; b <= 0 || b > MaxBidMicros {
				v.add(f+".bid_micros", "is %d, want 1 to %d", b, int64(MaxBidMicros))
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
		v.checkID(f+".impression_id", e.ImpressionID, true)
		switch e.Type {
		case EventClick:
			if e.Value != 0 {
				v.add(f+".value", "a click has no value")
			}
		case EventConversion:
			if val := e.Value; !(val >= 0 && val <= MaxConversionValue) {
				v.add(f+".value", "is %v, want 0 to %g", val, MaxConversionValue)
			}
		default:
			v.add(f+".type", "want EVENT_TYPE_CLICK or EVENT_TYPE_CONVERSION")
		}
		v.checkID(f+".event_id", e.EventID, false)
	}
	return v.err()
}
