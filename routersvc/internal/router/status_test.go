package router

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/adrank/adrank/routersvc/internal/core"
)

// Status is the one place a core error becomes a status: every kind has the
// code of the README's error table, the message is kept, and an invalid
// request's violations travel as BadRequest details.
func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{core.Errorf(core.KindInternal, "m"), codes.Internal},
		{core.Errorf(core.KindInvalid, "m"), codes.InvalidArgument},
		{core.Errorf(core.KindNotFound, "m"), codes.NotFound},
		{core.Errorf(core.KindFailedPrecondition, "m"), codes.FailedPrecondition},
		{core.Errorf(core.KindUnavailable, "m"), codes.Unavailable},
		{core.Errorf(core.KindOverloaded, "m"), codes.ResourceExhausted},
		{core.Errorf(core.KindDeadline, "m"), codes.DeadlineExceeded},
		{core.Errorf(core.KindCanceled, "m"), codes.Canceled},
		{fmt.Errorf("wrapped: %w", core.Errorf(core.KindNotFound, "m")), codes.NotFound},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("m"), codes.Internal},
	} {
		st := status.Convert(Status(tc.err))
		if st.Code() != tc.code || st.Message() == "" {
			t.Errorf("%v: %v %q, want %v", tc.err, st.Code(), st.Message(), tc.code)
		}
	}
	if Status(nil) != nil {
		t.Error("Status(nil) is not nil")
	}
	st := status.Convert(Status(core.Validate(&core.Request{})))
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if st.Code() != codes.InvalidArgument || len(fields) != 4 || fields[0] != "user_id" || st.Message() != "user_id: is required (and 3 more)" {
		t.Errorf("empty request: %v %q, violations %v; want user_id, domain, slots and candidates", st.Code(), st.Message(), fields)
	}
}
