package experiment

import (
	"encoding/json"
	"math"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// FuzzParse: no document panics; an accepted one names its versions, has an
// ID consistent with its strategy, survives a JSON round trip, and has every
// string, list and number within its bound (checked apart from the
// validator, by bounded).
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"production": "v1", "shadow": {"versions": ["v3"], "fraction": 1.0}, "canary": {"version": "v2", "steps": [1, 5, 25, 50, 100], "stepInterval": "10m", "internalUsers": ["u1"]}}`))
	f.Add([]byte(`{"ab": {"salt": "feed-2026-11", "arms": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}]}}`))
	f.Add([]byte(`{"ab": {"salt": "s", "mde": 0.02, "alpha": 0.01, "power": 0.9, "arms": [{"version": "v1", "weight": 1e6}, {"version": "v2", "weight": 1e-300}]}}`))
	f.Add([]byte(`{"canary": {"version": "v2", "steps": [50, 100], "stepInterval": "1s", "guardrails": {"maxErrorRate": 0.01, "maxP99": "50ms", "alpha": 0.05, "minRequests": 100}}}`))
	f.Add([]byte(`{"bandit": {"policy": "thompson", "versions": ["v1", "v2", "v3"]}}`))
	f.Add([]byte(`{"bandit": {"policy": "epsilon_greedy", "epsilon": 0.2, "versions": ["v1", "v2"]}}`))
	f.Add([]byte(`{"bandit": {"policy": "thompson", "minShare": 0.5, "versions": ["v1", "v2"]}}`))
	f.Add([]byte(`{"bandit": {"policy": "thompson", "minShare": 0.51, "versions": ["v1", "v2"]}}`))
	f.Add([]byte(`{"interleave": {"a": "v1", "b": "v2", "fraction": 0.1}}`))
	// Just past a bound each: refused now, caught by bounded if a bound
	// ever goes.
	f.Add([]byte(`{"ab": {"salt": "s", "mde": 10.5, "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`))
	f.Add([]byte(`{"ab": {"salt": "s", "arms": [{"version": "v1", "weight": 1e7}, {"version": "v2", "weight": 1}]}}`))
	f.Add([]byte(`{"canary": {"version": "v2", "steps": [100], "stepInterval": "1s", "guardrails": {"maxP99": "2h", "minRequests": 2000000000}}}`))
	f.Add([]byte(`{"canary": {"version": "v2", "steps": [100], "stepInterval": "999ms"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		_ = e.Versions()
		if (e.Strategy() == "") != (e.ID() == "") {
			t.Fatalf("strategy %q but ID %q", e.Strategy(), e.ID())
		}
		if why := bounded(e); why != "" {
			t.Fatalf("accepted a document with %s:\n%s", why, data)
		}
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("an accepted document does not parse after a round trip: %v\n%s", err, out)
		}
		if again.ID() != e.ID() {
			t.Fatalf("ID %q became %q", e.ID(), again.ID())
		}
	})
}

// bounded says what in e is out of bounds, or "".
func bounded(e *Experiment) string {
	text := func(s string, max int) bool {
		if s == "" || len(s) > max || !utf8.ValidString(s) {
			return false
		}
		for _, r := range s {
			if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
				return false
			}
		}
		return true
	}
	within := func(x, lo, hi float64) bool { return !math.IsNaN(x) && x >= lo && x <= hi }
	for _, v := range e.Versions() {
		if !text(v, 63) {
			return "version " + v
		}
	}
	if s := e.Shadow; s != nil && (len(s.Versions) > MaxListed || !within(s.Fraction, 0, 1)) {
		return "a shadow out of bounds"
	}
	if c := e.Canary; c != nil {
		if len(c.Steps) > MaxListed || len(c.InternalUsers) > MaxInternalUsers || c.StepInterval.Duration < time.Second {
			return "a canary out of bounds"
		}
		for _, s := range c.Steps {
			if !within(s, math.SmallestNonzeroFloat64, 100) {
				return "a canary step out of bounds"
			}
		}
		for _, u := range c.InternalUsers {
			if !text(u, MaxUserID) {
				return "an internal user out of bounds"
			}
		}
		g := c.Guardrails
		if !within(g.MaxErrorRate, 0, 1) || !within(g.Alpha, 0, 1) || g.MaxP99.Duration < 0 || g.MaxP99.Duration > time.Hour || g.MinRequests < 0 || g.MinRequests > 1e9 {
			return "guardrails out of bounds"
		}
	}
	if ab := e.AB; ab != nil {
		if !text(ab.Salt, MaxSalt) || len(ab.Arms) > MaxListed || !within(ab.MDE, 0, 10) || !within(ab.Alpha, 0, 1) || !within(ab.Power, 0, 1) {
			return "an A/B test out of bounds"
		}
		sum := 0.0
		for _, a := range ab.Arms {
			if !within(a.Weight, math.SmallestNonzeroFloat64, MaxWeight) {
				return "an A/B weight out of bounds"
			}
			sum += a.Weight
		}
		if math.IsInf(sum, 0) || sum <= 0 {
			return "A/B weights whose sum is not finite and positive"
		}
	}
	if b := e.Bandit; b != nil && (len(b.Versions) > MaxListed || !within(b.Epsilon, 0, 1) || !within(b.MinShare, 0, 1/float64(max(len(b.Versions), 1)))) {
		return "a bandit out of bounds"
	}
	if in := e.Interleave; in != nil && !within(in.Fraction, math.SmallestNonzeroFloat64, 1) {
		return "an interleaving out of bounds"
	}
	return ""
}
