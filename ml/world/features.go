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

// UserFeatures returns the stored user's features; nil (all missing) for an
// unknown user.
func UserFeatures(u *User) map[string]float64 {
	if u == nil {
		return nil
	}
	return map[string]float64{
		FUserAge:      float64(u.Age),
		FUserActivity: u.Activity,
		FUserHistCTR:  u.HistCTR,
	}
}

// ContextFeatures derives the request-context features.
func ContextFeatures(c Context) map[string]float64 {
	f := make(map[string]float64, 6)
	if !c.Time.IsZero() {
		h := hourOfDay(c)
		f[FHourSin] = math.Sin(2 * math.Pi * h / 24)
		f[FHourCos] = math.Cos(2 * math.Pi * h / 24)
	}
	if c.Device != "" {
		f[FMobile], f[FDesktop], f[FTablet] = 0, 0, 0
		switch c.Device {
		case "mobile":
			f[FMobile] = 1
		case "desktop":
			f[FDesktop] = 1
		case "tablet":
			f[FTablet] = 1
		}
	}
	if c.Query != "" {
		f[FHasQuery] = 1
	} else {
		f[FHasQuery] = 0
	}
	return f
}

// AdFeatures returns an ad's own features and its crosses with the user and
// the context. Either may be nil (unknown): those features are then absent.
func AdFeatures(u *User, a *Ad, c Context) map[string]float64 {
	if a == nil {
		return nil
	}
	f := map[string]float64{
		FAdHistCTR:  a.HistCTR,
		FAdAgeDays:  float64(a.AgeDays),
		FQueryMatch: 0,
	}
	if queryMatches(c.Query, a.Topic) {
		f[FQueryMatch] = 1
	}
	if u != nil {
		f[FUserAdInterest] = u.Interests[a.Topic]
	}
	return f
}
