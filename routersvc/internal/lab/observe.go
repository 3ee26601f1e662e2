package lab

import "time"

// Observer hears what the lab records, for metrics. Its methods are called
// on the request path: they must be cheap and safe for concurrent use.
type Observer interface {
	// Served is one served request, with its ranker calls.
	Served(s Served)
	// Event is an accepted click or conversion on an impression served by
	// version under strategy.
	Event(domain, strategy, version string, conversion bool)
	// EventRefused is a refused event: "unknown", "expired", "forged" or
	// "duplicate".
	EventRefused(reason string)
	// ShadowDropped is a shadow comparison dropped because the queue was
	// full.
	ShadowDropped(domain, version string)
}

// nopObserver hears nothing.
type nopObserver struct{}

func (nopObserver) Served(Served)                        {}
func (nopObserver) Event(string, string, string, bool)   {}
func (nopObserver) EventRefused(string)                  {}
func (nopObserver) ShadowDropped(domain, version string) {}

// Activity is impressions and clicks of one ad shown to one user, at a
// time: what the feature store counts.
type Activity struct {
	UserID, AdID        string
	At                  time.Time
	Impressions, Clicks uint32
}
