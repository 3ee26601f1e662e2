package experiment

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseTheIssueExampleParts(t *testing.T) {
	doc := `{
	  "production": "v1",
	  "shadow": {"versions": ["v3"], "fraction": 1.0},
	  "canary": {"version": "v2", "steps": [1, 5, 25, 50, 100], "stepInterval": "10m", "internalUsers": ["u1"]}
	}`
	e, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if e.Canary.StepInterval.Duration != 10*time.Minute || e.Strategy() != "canary" || e.ID() != "canary:v2" {
		t.Errorf("%+v", e.Canary)
	}
	if got := strings.Join(e.Versions(), ","); got != "v1,v2,v3" {
		t.Errorf("versions %s", got)
	}
	known := map[string]bool{"v1": true, "v2": true}
	err = e.Validate(func(v string) bool { return known[v] })
	if err == nil || !strings.Contains(err.Error(), `unknown version "v3"`) {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"two exclusive strategies", `{"ab": {"salt": "s", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}, "bandit": {"policy": "ucb1", "versions": ["v1", "v2"]}}`, "ab and bandit are exclusive"},
		{"zero weight", `{"ab": {"salt": "s", "arms": [{"version": "v1", "weight": 0}, {"version": "v2", "weight": 1}]}}`, "ab.arms[0].weight"},
		{"negative weight", `{"ab": {"salt": "s", "arms": [{"version": "v1", "weight": 5}, {"version": "v2", "weight": -1}]}}`, "ab.arms[1].weight"},
		{"bad duration", `{"canary": {"version": "v2", "steps": [5], "stepInterval": "ten minutes"}}`, `bad duration "ten minutes"`},
		{"no salt", `{"ab": {"arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`, "ab.salt"},
		{"one arm", `{"ab": {"salt": "s", "arms": [{"version": "v1", "weight": 1}]}}`, "ab.arms: 1 arms"},
		{"decreasing steps", `{"canary": {"version": "v2", "steps": [5, 1], "stepInterval": "1m"}}`, "canary.steps[1]"},
		{"unknown policy", `{"bandit": {"policy": "greedy", "versions": ["v1", "v2"]}}`, "bandit.policy"},
		{"interleave with itself", `{"interleave": {"a": "v1", "b": "v1", "fraction": 0.1}}`, "a and b are both"},
		{"interleave a and versions", `{"interleave": {"a": "v1", "versions": ["v1", "v2"], "fraction": 0.1}}`, "not both"},
		{"multileave one version", `{"interleave": {"versions": ["v1"], "fraction": 0.1}}`, "interleave.versions: 1 versions"},
		{"multileave a version twice", `{"interleave": {"versions": ["v1", "v2", "v1"], "fraction": 0.1}}`, "interleave.versions[2]"},
		{"interleave fraction", `{"interleave": {"a": "v1", "b": "v2", "fraction": 0}}`, "interleave.fraction"},
		{"shadow fraction", `{"shadow": {"versions": ["v2"], "fraction": 2}}`, "shadow.fraction"},
		{"unknown field", `{"canary": {"version": "v2", "steps": [5], "stepInterval": "1m", "step_interval": "1m"}}`, "unknown field"},
		{"bad version name", `{"production": "V 1"}`, "not a version name"},
		{"bad JSON", `{"ab": `, "bad JSON"},
		// Every string, list and number bounded.
		{"huge salt", `{"ab": {"salt": "` + strings.Repeat("s", MaxSalt+1) + `", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`, "ab.salt"},
		{"salt with a newline", `{"ab": {"salt": "a\nb", "arms": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}]}}`, "ab.salt"},
		{"enormous weights", `{"ab": {"salt": "s", "arms": [{"version": "v1", "weight": 1e308}, {"version": "v2", "weight": 1e308}]}}`, "ab.arms[0].weight"},
		{"nanosecond steps", `{"canary": {"version": "v2", "steps": [1, 100], "stepInterval": "1ns"}}`, "canary.stepInterval"},
		{"internal user with NUL", `{"canary": {"version": "v2", "steps": [5], "stepInterval": "1m", "internalUsers": ["u\u0000"]}}`, "canary.internalUsers[0]"},
		{"too many steps", `{"canary": {"version": "v2", "steps": [` + steps(MaxListed+1) + `], "stepInterval": "1m"}}`, "canary.steps: 101 entries"},
		{"position bias not relative to the first slot", `{"bandit": {"policy": "thompson", "versions": ["v1", "v2"], "positionBias": [0.9, 0.5]}}`, "bandit.positionBias[0]"},
		{"position bias rising", `{"bandit": {"policy": "thompson", "versions": ["v1", "v2"], "positionBias": [1, 0.5, 0.7]}}`, "bandit.positionBias[2]"},
		{"position bias of 0", `{"bandit": {"policy": "thompson", "versions": ["v1", "v2"], "positionBias": [1, 0]}}`, "bandit.positionBias[1]"},
		{"half-life too short", `{"bandit": {"policy": "thompson", "versions": ["v1", "v2"], "halfLife": "1ms"}}`, "bandit.halfLife"},
		{"interleave alpha", `{"interleave": {"a": "v1", "b": "v2", "fraction": 0.1, "alpha": 1}}`, "interleave.alpha"},
		{"canary drop", `{"canary": {"version": "v2", "steps": [5], "stepInterval": "1m", "guardrails": {"drop": 2}}}`, "canary.guardrails"},
		{"explore share", `{"explore": {"share": 0}}`, "explore.share"},
		{"explore epsilon", `{"explore": {"share": 0.1, "epsilon": 1.5}}`, "explore.epsilon"},
		{"explore keep", `{"explore": {"share": 0.1, "keep": 2000000}}`, "explore.keep"},
		{"explore retention", `{"explore": {"share": 0.1, "retention": "100000h"}}`, "explore.retention"},
		{"a document too large", `{"production": "v1"` + strings.Repeat(" ", MaxDocument) + `}`, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// steps is n increasing percentages within (0, 100].
func steps(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%g", 100*float64(i+1)/float64(n))
	}
	return b.String()
}
