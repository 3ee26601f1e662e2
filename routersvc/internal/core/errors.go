package core

import (
	"context"
	"errors"
	"fmt"
)

// Kind is the class of a domain error. The gRPC boundary maps each to one
// status code (the README's error table); every other front maps them the
// same way.
type Kind int

// Kinds.
const (
	// KindInternal is our fault (also: any error that is not an *Error).
	KindInternal Kind = iota
	// KindInvalid is a caller's mistake in a named field.
	KindInvalid
	// KindNotFound: the domain is not known.
	KindNotFound
	// KindFailedPrecondition: the request does not fit the state (no canary
	// to promote).
	KindFailedPrecondition
	// KindUnavailable: a downstream or the state store is down; retry.
	KindUnavailable
	// KindOverloaded: too much work in flight; retry with backoff.
	KindOverloaded
	// KindDeadline: the time budget ran out.
	KindDeadline
	// KindCanceled: the caller went away.
	KindCanceled
)

// Error is a domain error: its kind, and a message for the caller.
type Error struct {
	Kind Kind
	Msg  string
	// Fields are the violations of a KindInvalid error, the first one first
	// in Msg.
	Fields []FieldViolation
	// Detail is what a downstream said, for logs; callers never see it.
	Detail string
}

// Detail is err's detail for logs: its message, and what a downstream said.
func Detail(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Detail != "" {
		return e.Msg + ": " + e.Detail
	}
	return err.Error()
}

// FieldViolation names a field of a request and what is wrong with it.
type FieldViolation struct {
	Field, Description string
}

func (e *Error) Error() string { return e.Msg }

// Errorf returns an *Error of kind k.
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// KindOf is err's kind: an *Error's, a context error's, else KindInternal.
func KindOf(err error) Kind {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Kind
	case errors.Is(err, context.DeadlineExceeded):
		return KindDeadline
	case errors.Is(err, context.Canceled):
		return KindCanceled
	}
	return KindInternal
}

// Message is err's message for the caller.
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return err.Error()
}

// violations collects field violations.
type violations []FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// err is a KindInvalid error naming the first field in its message, with
// every violation attached; nil when there are none.
func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	msg := v[0].Field + ": " + v[0].Description
	if len(v) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(v)-1)
	}
	return &Error{Kind: KindInvalid, Msg: msg, Fields: v}
}

// downstreamError is a failed downstream call as the caller sees it: our
// own deadline or the caller's cancellation pass through; a downstream that
// is down, overloaded or too slow keeps its kind; anything else (a
// downstream's KindInvalid included) is our fault, KindInternal.
func downstreamError(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return Errorf(KindDeadline, "%s: deadline exceeded", what)
		}
		return Errorf(KindCanceled, "%s: canceled", what)
	}
	k := KindOf(err)
	switch k {
	case KindUnavailable, KindOverloaded, KindDeadline:
	default:
		k = KindInternal
	}
	out := &Error{Kind: k, Msg: what + ": " + Message(err)}
	var e *Error
	if errors.As(err, &e) {
		out.Detail = e.Detail
	}
	return out
}
