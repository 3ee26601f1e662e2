package core

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"time"
)

// Source says where a Response comes from.
type Source int

// Sources.
const (
	// SourceRealtime: ranked for this call.
	SourceRealtime Source = iota + 1
	// SourcePrecomputed: ranked ahead of time by the stream worker, for the
	// same user, domain, page and candidates.
	SourcePrecomputed
	// SourceSnapshot: pCTRs from a batch snapshot (batch mode, or the
	// fallback of a failed ranker or features).
	SourceSnapshot
)

// String names the source.
func (s Source) String() string {
	switch s {
	case SourceRealtime:
		return "realtime"
	case SourcePrecomputed:
		return "precomputed"
	case SourceSnapshot:
		return "snapshot"
	}
	return "unknown"
}

// Results holds precomputed answers (store.Store does; the stream worker
// writes them with its record).
type Results interface {
	Result(ctx context.Context, key string) ([]byte, time.Time, error)
}

// UsePrecomputed makes Rank answer from r when it holds an answer for the
// same request, put there by the stream worker within its TTL.
func (e *Engine) UsePrecomputed(r Results) { e.results = r }

// PrecomputedKey identifies the answers a request can share: the same
// domain, user, slots, reserve, page (device, country, query; not the
// timestamp) and candidates in the same order, with the same bids. The
// request ID is not part of it.
func PrecomputedKey(req *Request) string {
	h := sha256.New()
	str := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	num := func(v uint64) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], v)
		h.Write(n[:])
	}
	str(req.Domain)
	str(req.UserID)
	num(uint64(req.Slots))
	num(uint64(req.ReserveMicros))
	num(uint64(req.Context.Device))
	str(req.Context.Country)
	str(req.Context.Query)
	num(uint64(len(req.Candidates)))
	for _, c := range req.Candidates {
		str(c.AdID)
		str(c.AdvertiserID)
		num(uint64(c.BidMicros))
		num(math.Float64bits(c.Quality))
	}
	return req.Domain + "|" + hex.EncodeToString(h.Sum(nil)[:16])
}

// answerKey is where a streamed answer is kept: by its domain and request
// ID. PrecomputedKey's entry points to it.
func answerKey(domain, requestID string) string { return "answer|" + domain + "|" + requestID }

// precomputed returns the stored answer for req, if there is one.
func (e *Engine) precomputed(ctx context.Context, req *Request) (*Response, bool) {
	if e.results == nil {
		return nil, false
	}
	// A slow store must not eat the budget: past a fifth of it, rank now.
	ctx, cancel := context.WithTimeout(ctx, e.limits.Budget/5)
	defer cancel()
	ptr, _, err := e.results.Result(ctx, PrecomputedKey(req))
	if err != nil {
		return nil, false // absent, expired, or the store is down or slow: rank now
	}
	return e.answer(ctx, string(ptr))
}

// Answered returns the answer already given to a streamed request (a
// message read again, after an aborted transaction or a duplicate send), so
// that it is answered the same way twice.
func (e *Engine) Answered(ctx context.Context, domain, requestID string) (*Response, bool) {
	if e.results == nil {
		return nil, false
	}
	return e.answer(ctx, answerKey(domain, requestID))
}

func (e *Engine) answer(ctx context.Context, key string) (*Response, bool) {
	v, at, err := e.results.Result(ctx, key)
	if err != nil {
		return nil, false
	}
	var resp Response
	if err := json.Unmarshal(v, &resp); err != nil {
		return nil, false
	}
	for _, r := range resp.Results {
		if !e.ids.Verify(r.ImpressionID) {
			// Written before this router's keys (an upgrade to signed
			// IDs, a dropped key): its events would be refused. Rank now.
			return nil, false
		}
	}
	resp.Source, resp.Age, resp.Timing = SourcePrecomputed, time.Since(at), Timing{}
	return &resp, true
}

// Precomputed encodes an answer for a Results store: the answer under its
// domain and request ID (for Answered), and a pointer to it under the
// request's PrecomputedKey (for Rank to find it for the same request).
func Precomputed(req *Request, resp *Response) (answer, pointer map[string][]byte, err error) {
	v, err := json.Marshal(resp)
	if err != nil {
		return nil, nil, err
	}
	k := answerKey(resp.Domain, resp.RequestID)
	return map[string][]byte{k: v}, map[string][]byte{PrecomputedKey(req): []byte(k)}, nil
}
