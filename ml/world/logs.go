package world

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Impression is one logged ad view: the features the store would have served
// at the time, and whether the user clicked.
type Impression struct {
	Shared   map[string]float64 // user and context features
	Ad       map[string]float64 // ad and cross features
	TrueProb float64
	Clicked  bool
}

// Feature returns the named feature, looking in the ad's features first.
func (im Impression) Feature(name string) (float64, bool) {
	if v, ok := im.Ad[name]; ok {
		return v, true
	}
	v, ok := im.Shared[name]
	return v, ok
}

// LogOptions shapes a sampled log.
type LogOptions struct {
	Domain        string
	N             int
	Seed          uint64
	ColdUserShare float64 // share of impressions for users the store never saw
	ColdAdShare   float64 // share of impressions of ads the store never saw
}

// SampleLog draws n impressions of random (user, ad, context) triples and
// samples clicks from the hidden click model. Deterministic in opts.
func (w *World) SampleLog(opts LogOptions) ([]Impression, error) {
	ads := w.Ads(opts.Domain)
	if len(ads) == 0 {
		return nil, fmt.Errorf("domain %q has no ads", opts.Domain)
	}
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed+1))
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	out := make([]Impression, 0, opts.N)
	for i := range opts.N {
		u, stored := w.users[rng.IntN(len(w.users))], true
		if rng.Float64() < opts.ColdUserShare {
			u, stored = NewUser(rng, fmt.Sprintf("cold-u%d", i)), false
		}
		a, adStored := ads[rng.IntN(len(ads))], true
		if rng.Float64() < opts.ColdAdShare {
			a, adStored = w.NewAd(rng, fmt.Sprintf("cold-ad%d", i), opts.Domain), false
		}
		c := RandomContext(rng, start)
		p := ClickProb(u, a, c)
		var su *User
		if stored {
			su = u
		}
		shared := ContextFeatures(c)
		for k, v := range UserFeatures(su) {
			shared[k] = v
		}
		var adF map[string]float64
		if adStored {
			adF = AdFeatures(su, a, c)
		}
		out = append(out, Impression{Shared: shared, Ad: adF, TrueProb: p, Clicked: rng.Float64() < p})
	}
	return out, nil
}

// RandomContext draws a request context within a week after start: a device,
// usually a time, and sometimes a one-word topic query.
func RandomContext(rng *rand.Rand, start time.Time) Context {
	c := Context{
		Device:  Devices[rng.IntN(len(Devices))],
		Country: Countries[rng.IntN(len(Countries))],
	}
	if rng.Float64() < 0.95 {
		c.Time = start.Add(time.Duration(rng.Int64N(int64(7 * 24 * time.Hour))))
	}
	if rng.Float64() < 0.15 {
		c.Query = Topics[rng.IntN(NumTopics)]
	}
	return c
}
