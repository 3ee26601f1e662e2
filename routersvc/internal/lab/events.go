package lab

import (
	"context"
	"errors"
	"fmt"

	"github.com/adrank/adrank/routersvc/internal/store"
)

// Event is one feedback event.
type Event struct {
	ImpressionID string
	Conversion   bool // a click otherwise
	Value        float64
	EventID      string
}

// EventResult is what became of one event.
type EventResult int

// Event outcomes.
const (
	Accepted EventResult = iota
	Duplicate
	UnknownImpression
	Expired
	// Rejected: refused as invalid (an edge impression's model, ID or arm).
	Rejected
	// Forged: an event whose impression ID the router did not sign.
	Forged
)

// Event applies one event: idempotently, atomically, joined to its
// impression's assignment.
func (l *Lab) Event(ctx context.Context, ev Event) (EventResult, error) {
	id := ev.ImpressionID
	if l.o.Open != nil {
		plain, ok := l.o.Open(id)
		if !ok {
			return Forged, l.refuse(ctx, "forged")
		}
		id = plain
	}
	im, ok := l.rec.impression(id)
	if !ok {
		var err error
		im, err = l.o.Store.Impression(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return UnknownImpression, l.refuse(ctx, "unknown")
		}
		if err != nil {
			return 0, err
		}
	}
	if l.o.Now().Sub(im.At) > l.o.Window {
		return Expired, l.refuse(ctx, "expired")
	}
	kind := "click"
	if ev.Conversion {
		kind = "conversion"
	}
	// An impression counts one click and one conversion at most, whatever
	// their event IDs: a CTR or conversion rate cannot pass 1, and no
	// caller can repeat one impression's click into a bandit's verdict.
	op := store.Op{Once: fmt.Sprintf("event|%s|%s", im.ID, kind), OnceTTL: l.impressionTTL(), DuelTTL: l.impressionTTL()}
	g := groupKey(im.Domain, im.Experiment, im.Group)
	add := func(key, field string, d float64) {
		op.Counters = append(op.Counters, store.CounterIncr{Key: key, Field: field, Delta: d})
	}
	grouped := Strategy(im.Strategy) != Interleaved // interleaved requests count per request, in duels
	if ev.Conversion {
		add(outcomesKey(g), "conversions", 1)
		add(outcomesKey(g), "value", ev.Value)
		if grouped {
			op.Units = append(op.Units, store.UnitIncr{Group: g, Unit: im.UserID, V: 1, CovariateFrom: historyKey(im.Domain)})
		}
	} else {
		if grouped {
			op.Units = append(op.Units, store.UnitIncr{Group: g, Unit: im.UserID, C: 1, R: im.Price, CovariateFrom: historyKey(im.Domain)})
		}
		op.Units = append(op.Units, store.UnitIncr{Group: historyKey(im.Domain), Unit: im.UserID, C: 1, R: im.Price})
		if im.OPE {
			l.logOPEClick(&op, im)
		}
		add(outcomesKey(g), "revenue", float64(im.Price))
		switch Strategy(im.Strategy) {
		case Bandit:
			add(banditKey(im.Domain, im.Experiment), im.Version+".c", 1)
		case Interleaved:
			// Credit against every other team: one duel per pair.
			team, ok := teamOf(im.Group)
			if !ok { // the rankers agreed: no credit
				break
			}
			for other := range teamsOf(im.Experiment) {
				if other == team {
					continue
				}
				i, j := min(team, other), max(team, other)
				d := store.DuelIncr{Key: pairKey(im.Domain, im.Experiment, i, j), Unit: im.RequestID}
				if team == i {
					d.A = 1
				} else {
					d.B = 1
				}
				op.Duels = append(op.Duels, d)
			}
		}
	}
	add(eventsKey, "accepted", 1)
	applied, err := l.o.Store.Apply(ctx, op)
	if err != nil {
		return 0, err
	}
	if !applied {
		return Duplicate, l.refuse(ctx, "duplicate")
	}
	l.o.Observe.Event(im.Domain, im.Strategy, im.Version, ev.Conversion)
	if l.o.Activity != nil && !ev.Conversion && im.AdID != "" {
		l.o.Activity([]Activity{{UserID: im.UserID, AdID: im.AdID, At: l.o.Now(), Clicks: 1}})
	}
	return Accepted, nil
}

// refuse counts a refused event, in the store and for metrics.
func (l *Lab) refuse(ctx context.Context, reason string) error {
	l.o.Observe.EventRefused(reason)
	return l.count(ctx, reason)
}

func (l *Lab) count(ctx context.Context, field string) error {
	_, err := l.o.Store.Apply(ctx, store.Op{Counters: []store.CounterIncr{{Key: eventsKey, Field: field, Delta: 1}}})
	return err
}
