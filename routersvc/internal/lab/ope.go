package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/adrank/adrank/platform/experiment"
	"github.com/adrank/adrank/routersvc/internal/store"
)

// OPERecord is one request production served and logged for off-policy
// evaluation: what a new version needs to choose its first ad for the same
// request, and what production's choice (or the exploration's) got.
type OPERecord struct {
	RequestID string    `json:"request_id"`
	At        time.Time `json:"at"`
	// Version is production's version; Pctrs its pCTR of each candidate
	// (the reward model of the doubly robust estimate).
	Version string    `json:"version"`
	Pctrs   []float64 `json:"pctrs"`
	// ProductionTop is production's first ad, Top the ad shown first, and
	// Propensity the chance Top had of being shown first:
	// (1 - Epsilon) [Top = ProductionTop] + Epsilon / len(candidates).
	ProductionTop string  `json:"production_top"`
	Top           string  `json:"top"`
	Propensity    float64 `json:"propensity"`
	Epsilon       float64 `json:"epsilon"`
	// Request and Features are the request and the features it was
	// ranked on, as the core writes them (JSON).
	Request  json.RawMessage `json:"request"`
	Features json.RawMessage `json:"features"`
	// Shown are the ads shown, by slot (absent in records logged before
	// they were kept: then only Top is known).
	Shown []string `json:"shown,omitempty"`
}

// opeClick is the log entry of a click on an ad of a logged request.
type opeClick struct {
	Click string `json:"click"`        // request ID
	Ad    string `json:"ad,omitempty"` // empty in entries logged when only the first ad's clicks were
}

// Clicks are the clicks on logged requests' ads.
type Clicks map[string]map[string]bool // request ID -> ad ID ("" for the first ad, in old entries)

// On reports whether the ad shown in a logged request was clicked.
func (c Clicks) On(rec OPERecord, ad string) bool {
	ads := c[rec.RequestID]
	return ads[ad] || (ad == rec.Top && ads[""])
}

func opeStream(domain string) string      { return "ope|" + domain }
func opeClickStream(domain string) string { return "ope-clicks|" + domain }

// opeLimits are the bounds of the domain's OPE logs, from its experiment
// (for a click, whose impression does not carry them).
func (l *Lab) opeLimits(domain string) (int, time.Duration) {
	x := &experiment.Explore{}
	if l.o.Experiments != nil {
		if d, ok := l.o.Experiments()[domain]; ok && d.Exp != nil && d.Exp.Explore != nil {
			x = d.Exp.Explore
		}
	}
	return x.KeepOrDefault(), x.RetentionOrDefault()
}

// OPELog is a domain's logged requests, oldest first, and the clicks on
// their ads.
func (l *Lab) OPELog(ctx context.Context, domain string) ([]OPERecord, Clicks, error) {
	var recs []OPERecord
	err := l.o.Store.ReadLog(ctx, opeStream(domain), func(data []byte) error {
		var r OPERecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("OPE record: %w", err)
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	clicked := Clicks{}
	err = l.o.Store.ReadLog(ctx, opeClickStream(domain), func(data []byte) error {
		var c opeClick
		if err := json.Unmarshal(data, &c); err != nil {
			return fmt.Errorf("OPE click: %w", err)
		}
		if clicked[c.Click] == nil {
			clicked[c.Click] = map[string]bool{}
		}
		clicked[c.Click][c.Ad] = true
		return nil
	})
	return recs, clicked, err
}

// logOPE adds a logged request's record to op, bounded as x says.
func (l *Lab) logOPE(op *store.Op, domain string, x *experiment.Explore, r *OPERecord) {
	b, err := json.Marshal(r)
	if err != nil {
		l.o.Log.Warn("OPE record not logged", "error", err)
		return
	}
	if x == nil { // an assignment made without exploring: the defaults
		x = &experiment.Explore{}
	}
	op.Logs = append(op.Logs, store.LogEntry{Stream: opeStream(domain), Data: b})
	op.LogMax, op.LogTTL = x.KeepOrDefault(), x.RetentionOrDefault()
}

// logOPEClick adds the click on an ad of a logged request to op.
func (l *Lab) logOPEClick(op *store.Op, im store.Impression) {
	b, _ := json.Marshal(opeClick{Click: im.RequestID, Ad: im.AdID})
	op.Logs = append(op.Logs, store.LogEntry{Stream: opeClickStream(im.Domain), Data: b})
	op.LogMax, op.LogTTL = l.opeLimits(im.Domain)
}
