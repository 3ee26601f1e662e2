package featurespec

import (
	"strings"
	"testing"

	"github.com/adrank/adrank/ml/world"
)

// The demo spec declares what the synthetic world serves, and the real-time
// counters.
func TestDemoServesTheWorld(t *testing.T) {
	got := strings.Join(Demo().Served(), ",")
	want := append([]string{}, world.AllFeatures...)
	for _, e := range []string{"user", "ad", "user_topic"} {
		for _, w := range []string{"1h", "24h"} {
			want = append(want, e+"_impressions_"+w, e+"_clicks_"+w)
		}
	}
	if len(Demo().Served()) != len(want) || len(Demo().Unserved(want)) != 0 {
		t.Errorf("demo serves %s, want %v", got, want)
	}
	if strings.Join(world.ContextColumns, ",") != strings.Join(ContextFeatures, ",") {
		t.Errorf("context features %v, the world's %v", ContextFeatures, world.ContextColumns)
	}
}

func TestCheckModelNamesWhatIsMissing(t *testing.T) {
	err := Demo().CheckModel("m.json", []string{"user_age", "user_hist_crt", "ad_hist_ctr", "shoe_size"})
	if err == nil || !strings.Contains(err.Error(), "user_hist_crt, shoe_size") {
		t.Errorf("%v", err)
	}
	if err := Demo().CheckModel("m.json", world.AllFeatures); err != nil {
		t.Error(err)
	}
}

func TestParseRefusesBadSpecs(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"no entities", `{"entities": []}`, "entities"},
		{"unknown field", `{"entities": [], "extra": 1}`, "unknown field"},
		{"bad name", `{"entities": [{"name": "User", "keys": ["id"], "features": [{"name": "a", "type": "float"}]}]}`, "entities[0].name"},
		{"bad type", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "a", "type": "double"}]}]}`, "entities[0].features[0]: type"},
		{"bad policy", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "a", "type": "float", "missing": "zero"}]}]}`, "missing"},
		{"default without policy", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "a", "type": "float", "default": 1}]}]}`, "default"},
		{"default out of bounds", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "a", "type": "float", "missing": "default", "default": 2, "max": 1}]}]}`, "default: 2 above"},
		{"min above max", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "a", "type": "float", "min": 2, "max": 1}]}]}`, "min 2 above max 1"},
		{"served twice", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "a", "type": "float"}]}, {"name": "ad", "keys": ["ad_id"], "features": [{"name": "a", "type": "float"}]}]}`, "already served"},
		{"context name", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "ctx_mobile", "type": "float"}]}]}`, "already served"},
		{"two user keys", `{"entities": [{"name": "user", "keys": ["a", "b"], "features": [{"name": "x", "type": "float"}]}]}`, "one key"},
		{"cross without ad", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "x", "type": "float"}]}, {"name": "user_topic", "keys": ["id", "topic"], "features": [{"name": "y", "type": "float"}]}]}`, "cross needs"},
		{"cross on a number", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "x", "type": "float"}]}, {"name": "ad", "keys": ["ad_id"], "features": [{"name": "topic", "type": "int"}]}, {"name": "user_topic", "keys": ["id", "topic"], "features": [{"name": "y", "type": "float"}]}]}`, "keys[1]"},
		{"counter of nothing", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "x", "type": "float"}]}], "counters": [{"entity": "ad", "windows": ["1h"]}]}`, "counters[0].entity"},
		{"counter window in days", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "x", "type": "float"}]}], "counters": [{"entity": "user", "windows": ["1d"]}]}`, "counters[0].windows[0]"},
		{"counter window too short", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "x", "type": "float"}]}], "counters": [{"entity": "user", "windows": ["30s"]}]}`, "counters[0].windows[0]"},
		{"counter name taken", `{"entities": [{"name": "user", "keys": ["id"], "features": [{"name": "user_clicks_1h", "type": "float"}]}], "counters": [{"entity": "user", "windows": ["1h"]}]}`, "already served"},
		{"derived of nothing", `{"entities": [{"name": "ad", "keys": ["ad_id"], "features": [{"name": "x", "type": "float"}]}], "derived": [{"name": "q", "kind": "query_contains", "of": "topic"}]}`, "derived[0].of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want an error naming %q", err, tc.want)
			}
		})
	}
}
