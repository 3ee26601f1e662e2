// Package store keeps experiment state (impressions and their assignments,
// counters, per-user sums, bandit and canary state) so that it survives a
// router restart and is shared by router replicas. Two backends implement
// Store: an embedded bbolt file (the default) and Redis (several replicas);
// one acceptance suite runs against both.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/adrank/adrank/routersvc/internal/stats"
)

// Impression is one shown ad and how it was chosen, kept long enough to join
// its feedback events.
type Impression struct {
	ID         string    `json:"id"`
	RequestID  string    `json:"request_id"`
	Domain     string    `json:"domain"`
	UserID     string    `json:"user_id"`
	AdID       string    `json:"ad_id,omitempty"` // empty in impressions stored before it was kept
	Version    string    `json:"version"`         // the version whose score placed the ad
	Strategy   string    `json:"strategy"`        // production, canary, ab, bandit, interleaved, fallback
	Experiment string    `json:"experiment"`      // experiment ID, "" for none
	Group      string    `json:"group"`           // arm, team or canary group the impression counts in
	Propensity float64   `json:"propensity"`      // probability the assignment had when chosen
	Slot       int       `json:"slot"`
	Price      int64     `json:"price_micros"`
	At         time.Time `json:"at"`
	// OPE: an ad of a request logged for off-policy evaluation (and for
	// training), whose click is logged too.
	OPE bool `json:"ope,omitempty"`
}

// UnitIncr adds to one unit (a user) of a group, keeping the group's
// stats.Sums exact: impressions (N), clicks (C), revenue in micros (R) and
// conversions (V).
type UnitIncr struct {
	Group string `json:"g"`
	Unit  string `json:"u"`
	N     int64  `json:"n"`
	C     int64  `json:"c"`
	R     int64  `json:"r"`
	V     int64  `json:"v"`
	// CovariateFrom, when set, names a group that keeps the same user's
	// history (impressions, clicks, revenue): when this unit is created,
	// those values, as they are before the op, become its PreImps,
	// PreClicks and PreRevenue (the covariate of CUPED).
	CovariateFrom string `json:"x"`
}

// delta is the increment as stats vars (the Pre ones are set on creation).
func (u UnitIncr) delta() stats.Unit {
	var d stats.Unit
	d[stats.Imps], d[stats.Clicks], d[stats.Revenue], d[stats.Conversions] = float64(u.N), float64(u.C), float64(u.R), float64(u.V)
	return d
}

// CounterIncr adds Delta to one field of a counter hash.
type CounterIncr struct {
	Key   string  `json:"k"`
	Field string  `json:"f"`
	Delta float64 `json:"d"`
}

// DuelIncr adds clicks to side A or B of one interleaved request (Unit) and
// keeps the counter hash Key's "wins", "ties" and "losses" (of A against B,
// over requests with at least one click) exact, and its "credit" and
// "credit2": the sums over requests of A's clicks minus B's, and of that
// squared, over "credit_n" requests with at least one click.
type DuelIncr struct {
	Key  string `json:"k"`
	Unit string `json:"u"`
	A    int64  `json:"a"`
	B    int64  `json:"b"`
}

// Op is applied atomically: all of it or, when Once was seen before, none.
type Op struct {
	// Once, when set, makes the Op apply only the first time this key is
	// seen within OnceTTL (idempotent events).
	Once    string
	OnceTTL time.Duration

	Units    []UnitIncr
	Counters []CounterIncr
	Duels    []DuelIncr
	// DuelTTL bounds how long a duel's per-request state is kept.
	DuelTTL time.Duration

	Impressions   []Impression
	ImpressionTTL time.Duration

	// Logs are appended to bounded streams: each keeps its newest LogMax
	// entries (0: 10,000) for at most LogTTL, oldest dropped first.
	Logs   []LogEntry
	LogMax int
	LogTTL time.Duration

	// Results are precomputed answers (text) to keep for ResultTTL, each
	// stamped with the time it was put; like the rest, not written when
	// Once was seen.
	Results   map[string][]byte
	ResultTTL time.Duration
}

// LogEntry is one entry of a log stream.
type LogEntry struct {
	Stream string `json:"s"`
	Data   []byte `json:"d"`
}

// DefaultLogMax bounds a log stream when an op does not.
const DefaultLogMax = 10_000

// Store is experiment state.
type Store interface {
	// Apply applies op atomically and reports whether it applied (false:
	// Once was already seen).
	Apply(ctx context.Context, op Op) (bool, error)
	// ApplyAll applies each op as Apply does, in order (an op whose Once
	// an earlier one in the same call set is not applied), and reports
	// which applied.
	ApplyAll(ctx context.Context, ops []Op) ([]bool, error)
	// Impression returns a stored impression; ErrNotFound once it expired.
	Impression(ctx context.Context, id string) (Impression, error)
	// Counters returns a counter hash (empty when absent).
	Counters(ctx context.Context, key string) (map[string]float64, error)
	// Group returns a group's per-user sums.
	Group(ctx context.Context, group string) (stats.Sums, error)
	// Get returns a small document; ErrNotFound when absent.
	Get(ctx context.Context, key string) ([]byte, error)
	// CompareAndSwap sets key to new if its value is old (nil old: absent).
	CompareAndSwap(ctx context.Context, key string, old, new []byte) (bool, error)
	// ReadLog calls fn with each live entry of a log stream, oldest first,
	// until fn returns an error (which ReadLog returns).
	ReadLog(ctx context.Context, stream string, fn func(data []byte) error) error
	// Result returns a precomputed answer and when it was put; ErrNotFound
	// when absent or expired.
	Result(ctx context.Context, key string) ([]byte, time.Time, error)
	Close() error
}

// ErrNotFound is returned for absent or expired entries.
var ErrNotFound = errors.New("not found")

// outcome is a duel's result for A: "wins", "losses", "ties", or "" when no
// side has a click.
func outcome(a, b int64) string {
	switch {
	case a == 0 && b == 0:
		return ""
	case a > b:
		return "wins"
	case a < b:
		return "losses"
	}
	return "ties"
}
