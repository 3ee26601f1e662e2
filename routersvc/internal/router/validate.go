package router

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/grpcx"
)

// Limits on a Rank request.
const (
	MaxCandidates  = 1000
	MaxSlots       = 100
	MaxIDLength    = grpcx.MaxRequestIDLength
	MaxQueryLength = 1024
	MaxQuality     = 1e6
)

// violations collects field violations.
type violations []*errdetails.BadRequest_FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// err is INVALID_ARGUMENT naming the first field in its message, with every
// violation attached as BadRequest details; nil when there are none.
func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	msg := v[0].Field + ": " + v[0].Description
	if len(v) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(v)-1)
	}
	st, err := status.New(codes.InvalidArgument, msg).WithDetails(&errdetails.BadRequest{FieldViolations: v})
	if err != nil {
		return status.Error(codes.InvalidArgument, msg)
	}
	return st.Err()
}

// validate checks a Rank request's fields.
func validate(req *routerv1.RankRequest) error {
	var v violations
	if len(req.GetRequestId()) > MaxIDLength {
		v.add("request_id", "longer than %d bytes", MaxIDLength)
	}
	switch {
	case req.GetUserId() == "":
		v.add("user_id", "is required")
	case len(req.GetUserId()) > MaxIDLength:
		v.add("user_id", "longer than %d bytes", MaxIDLength)
	}
	if req.GetDomain() == "" {
		v.add("domain", "is required")
	}
	if s := req.GetSlots(); s < 1 || s > MaxSlots {
		v.add("slots", "is %d, want 1 to %d", s, MaxSlots)
	}
	if r := req.GetReserveMicros(); r < 0 {
		v.add("reserve_micros", "is %d, want >= 0", r)
	}
	if c := req.GetContext(); c != nil {
		if ts := c.GetTimestamp(); ts != nil {
			if err := ts.CheckValid(); err != nil {
				v.add("context.timestamp", "%v", err)
			}
		}
		if _, ok := routerv1.Device_name[int32(c.GetDevice())]; !ok {
			v.add("context.device", "unknown device %d", c.GetDevice())
		}
		if len(c.GetQuery()) > MaxQueryLength {
			v.add("context.query", "longer than %d bytes", MaxQueryLength)
		}
	}
	cands := req.GetCandidates()
	switch n := len(cands); {
	case n == 0:
		v.add("candidates", "at least one candidate is required")
	case n > MaxCandidates:
		v.add("candidates", "%d candidates, at most %d", n, MaxCandidates)
	default:
		seen := make(map[string]int, n)
		for i, c := range cands {
			f := fmt.Sprintf("candidates[%d]", i)
			switch id := c.GetAdId(); {
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
			if b := c.GetBidMicros(); b <= 0 {
				v.add(f+".bid_micros", "is %d, want > 0", b)
			}
			if q := c.GetQuality(); !(q >= 0 && q <= MaxQuality) {
				v.add(f+".quality", "is %v, want within [0, %g]", q, MaxQuality)
			}
		}
	}
	return v.err()
}
