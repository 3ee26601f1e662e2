package world

import (
	"math"
	"time"
)

// Feature names. A feature the store cannot compute is absent, never zero.
const (
	FUserAge        = "user_age"
	FUserActivity   = "user_activity"
	FUserHistCTR    = "user_hist_ctr"
	FAdHistCTR      = "ad_hist_ctr"
	FAdAgeDays      = "ad_age_days"
	FUserAdInterest = "user_ad_interest"
	FQueryMatch     = "query_match"
	FHourSin        = "ctx_hour_sin"
	FHourCos        = "ctx_hour_cos"
	FMobile         = "ctx_mobile"
	FDesktop        = "ctx_desktop"
	FTablet         = "ctx_tablet"
	FHasQuery       = "ctx_has_query"
)

// AllFeatures lists every feature the store can serve, in a stable order.
var AllFeatures = []string{
	FUserAge, FUserActivity, FUserHistCTR, FAdHistCTR, FAdAgeDays, FUserAdInterest,
	FQueryMatch, FHourSin, FHourCos, FMobile, FDesktop, FTablet, FHasQuery,
}

// Context is the request context features derive from. A zero Time means the
// time is unknown; an empty Device means the device is unknown.
type Context struct {
	Time    time.Time
	Device  string
	Country string
	Query   string
}

func hourOfDay(c Context) float64 {
	t := c.Time.UTC()
	return float64(t.Hour()) + float64(t.Minute())/60
}

// SharedColumns and AdColumns are the dense layout featuresvc serves: the
// user and context features every ad of a request shares, and each ad's own
// (including its crosses with the user and the context).
var (
	SharedColumns = []string{FUserAge, FUserActivity, FUserHistCTR, FHourSin, FHourCos, FMobile, FDesktop, FTablet, FHasQuery}
	AdColumns     = []string{FAdHistCTR, FAdAgeDays, FQueryMatch, FUserAdInterest}
)

// ContextColumns are the request-context features, in the order ContextRow
// writes them.
var ContextColumns = SharedColumns[nUser:]

// ContextRow writes the values of ContextColumns for c into row.
func ContextRow(c Context, row []float64) { contextRow(c, row) }

// nUser is how many of SharedColumns are the user's.
const nUser = 3

// SharedRow writes the values of SharedColumns for u and c into row; a
// feature that cannot be computed (an unknown user, an unknown time or
// device) is NaN.
func SharedRow(u *User, c Context, row []float64) {
	userRow(u, row[:nUser])
	contextRow(c, row[nUser:])
}

func userRow(u *User, row []float64) {
	if u == nil {
		fill(row, math.NaN())
		return
	}
	row[0], row[1], row[2] = float64(u.Age), u.Activity, u.HistCTR
}

func contextRow(c Context, row []float64) {
	fill(row, math.NaN())
	if !c.Time.IsZero() {
		h := hourOfDay(c)
		row[0] = math.Sin(2 * math.Pi * h / 24)
		row[1] = math.Cos(2 * math.Pi * h / 24)
	}
	if c.Device != "" {
		row[2], row[3], row[4] = 0, 0, 0
		switch c.Device {
		case "mobile":
			row[2] = 1
		case "desktop":
			row[3] = 1
		case "tablet":
			row[4] = 1
		}
	}
	row[5] = 0
	if c.Query != "" {
		row[5] = 1
	}
}

// AdRow writes the values of AdColumns for ad a, shown to u in c, into row.
// An unknown ad (nil) has every feature missing (NaN); an unknown user has
// the user x ad cross missing.
func AdRow(u *User, a *Ad, c Context, row []float64) {
	fill(row, math.NaN())
	if a == nil {
		return
	}
	row[0], row[1], row[2] = a.HistCTR, float64(a.AgeDays), 0
	if queryMatches(c.Query, a.Topic) {
		row[2] = 1
	}
	if u != nil {
		row[3] = u.Interests[a.Topic]
	}
}

func fill(row []float64, v float64) {
	for i := range row {
		row[i] = v
	}
}

// asMap turns a row into a map of its present (non-NaN) values.
func asMap(names []string, row []float64) map[string]float64 {
	m := make(map[string]float64, len(names))
	for i, n := range names {
		if !math.IsNaN(row[i]) {
			m[n] = row[i]
		}
	}
	return m
}

// UserFeatures returns the stored user's features; nil (all missing) for an
// unknown user.
func UserFeatures(u *User) map[string]float64 {
	if u == nil {
		return nil
	}
	row := make([]float64, nUser)
	userRow(u, row)
	return asMap(SharedColumns[:nUser], row)
}

// ContextFeatures derives the request-context features.
func ContextFeatures(c Context) map[string]float64 {
	row := make([]float64, len(SharedColumns)-nUser)
	contextRow(c, row)
	return asMap(SharedColumns[nUser:], row)
}

// AdFeatures returns an ad's own features and its crosses with the user and
// the context. Either may be nil (unknown): those features are then absent.
func AdFeatures(u *User, a *Ad, c Context) map[string]float64 {
	if a == nil {
		return nil
	}
	row := make([]float64, len(AdColumns))
	AdRow(u, a, c, row)
	return asMap(AdColumns, row)
}
