package experiment

import (
	"encoding/json"
	"testing"
)

// FuzzParse: no document panics; an accepted one names its versions, has an
// ID consistent with its strategy, and survives a JSON round trip.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"production": "v1", "shadow": {"versions": ["v3"], "fraction": 1.0}, "canary": {"version": "v2", "steps": [1, 5, 25, 50, 100], "stepInterval": "10m", "internalUsers": ["u1"]}}`))
	f.Add([]byte(`{"ab": {"salt": "feed-2026-11", "arms": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}]}}`))
	f.Add([]byte(`{"bandit": {"policy": "thompson", "versions": ["v1", "v2", "v3"]}}`))
	f.Add([]byte(`{"interleave": {"a": "v1", "b": "v2", "fraction": 0.1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		_ = e.Versions()
		if (e.Strategy() == "") != (e.ID() == "") {
			t.Fatalf("strategy %q but ID %q", e.Strategy(), e.ID())
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
