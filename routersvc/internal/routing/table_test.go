package routing

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/kvconfig"
)

func ranker(id, domain, version string, healthy bool) discovery.Instance {
	return discovery.Instance{ID: id, Addr: id + ":1", Healthy: healthy, Meta: map[string]string{
		consulx.MetaDomain: domain, consulx.MetaVersion: version, consulx.MetaModelSHA256: "sha-" + version,
	}}
}

func newTable(pushed map[string][]string) *Table {
	return NewTable(slog.New(slog.NewTextHandler(io.Discard, nil)), func(k string, a []string) { pushed[k] = a })
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		in      string
		want    Config
		wantErr string
	}{
		{`{"production": "v1"}`, Config{Production: "v1"}, ""},
		{`{"production": `, Config{}, "bad JSON"},
		{`{"production": "v1"} {}`, Config{}, "trailing data"},
		{`{"production": "v1", "canary": 1}`, Config{}, "unknown field"},
		{`{"production": ""}`, Config{}, "production"},
		{`{"production": "V 1"}`, Config{}, "not a version name"},
		{`{"production": "v1", "mode": "batch"}`, Config{Production: "v1", Mode: "batch"}, ""},
		{`{"production": "v1", "mode": "realtime"}`, Config{Production: "v1", Mode: "realtime"}, ""},
		{`{"production": "v1", "mode": "nightly"}`, Config{}, `mode: "nightly"`},
	}
	for _, tt := range tests {
		got, err := ParseConfig([]byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %+v, %v", tt.in, got, err)
		}
	}
}

func TestTableKeepsTheLastGoodConfig(t *testing.T) {
	pushed := map[string][]string{}
	tab := newTable(pushed)
	tab.SetRankers([]discovery.Instance{
		ranker("a", "feed", "v1", true), ranker("b", "feed", "v1", false), ranker("c", "feed", "v2", true),
	})
	select {
	case <-tab.Synced():
		t.Fatal("synced before KV was read")
	default:
	}
	tab.SetConfigs(map[string][]byte{"feed": []byte(`{"production": "v1"}`)})
	tab.SetExperiments(nil)
	<-tab.Synced()

	d := tab.Snapshot().Domains["feed"]
	if d.Config.Production != "v1" || d.ConfigError != "" {
		t.Fatalf("config %+v error %q", d.Config, d.ConfigError)
	}
	if v := d.Production(); v.Healthy != 1 || v.Total != 2 || v.SHA256 != "sha-v1" {
		t.Errorf("v1 %+v", v)
	}
	if diff := cmp.Diff(map[string][]string{"ranker/feed/v1": {"a:1"}, "ranker/feed/v2": {"c:1"}}, pushed); diff != "" {
		t.Errorf("pushed (-want +got):\n%s", diff)
	}
	loaded := d.LoadedAt

	for _, bad := range []string{`{"production": "v9"}`, `not json`} {
		tab.SetConfigs(map[string][]byte{"feed": []byte(bad)})
		d = tab.Snapshot().Domains["feed"]
		if d.Config.Production != "v1" || d.ConfigError == "" || d.LoadedAt != loaded {
			t.Errorf("after %q: config %+v error %q", bad, d.Config, d.ConfigError)
		}
	}

	// An unknown version becomes valid once it registers.
	tab.SetConfigs(map[string][]byte{"feed": []byte(`{"production": "v3"}`)})
	if tab.Snapshot().Domains["feed"].Config.Production != "v1" {
		t.Fatal("unregistered v3 took production")
	}
	tab.SetRankers([]discovery.Instance{ranker("a", "feed", "v1", true), ranker("d", "feed", "v3", true)})
	d = tab.Snapshot().Domains["feed"]
	if d.Config.Production != "v3" || d.ConfigError != "" {
		t.Errorf("after v3 registered: config %+v error %q", d.Config, d.ConfigError)
	}
	if _, ok := pushed["ranker/feed/v2"]; !ok || pushed["ranker/feed/v2"] != nil {
		t.Errorf("v2 left but its addresses were not cleared: %v", pushed)
	}

	// Deleting the key while the domain has rankers keeps the last good
	// config serving, and says so.
	tab.SetConfigs(map[string][]byte{})
	d = tab.Snapshot().Domains["feed"]
	if d.Config == nil || d.Config.Production != "v3" || d.ConfigError != kvconfig.DeletedError {
		t.Fatalf("after the key was deleted: config %+v error %q", d.Config, d.ConfigError)
	}

	// If production's instances all go, the config stays while its key
	// does: requests get UNAVAILABLE, not NOT_FOUND.
	tab.SetConfigs(map[string][]byte{"feed": []byte(`{"production": "v3"}`)})
	tab.SetRankers(nil)
	d = tab.Snapshot().Domains["feed"]
	if d.Config.Production != "v3" || d.Production() != nil || d.ConfigError != "" {
		t.Errorf("after all rankers left: %+v %+v %q", d.Config, d.Production(), d.ConfigError)
	}

	// Key and rankers both gone: the domain is retired, and rankers that
	// come back later find no config.
	tab.SetConfigs(map[string][]byte{})
	if _, ok := tab.Snapshot().Domains["feed"]; ok {
		t.Error("feed still known after its key and rankers went")
	}
	tab.SetRankers([]discovery.Instance{ranker("a", "feed", "v3", true)})
	if d := tab.Snapshot().Domains["feed"]; d == nil || d.Config != nil {
		t.Errorf("after the retired domain's rankers came back: %+v", d)
	}
}

func TestTableIgnoresMalformedRegistrations(t *testing.T) {
	tab := newTable(map[string][]string{})
	tab.SetRankers([]discovery.Instance{ranker("a", "", "v1", true), ranker("b", "feed", "V1!", true)})
	tab.SetConfigs(map[string][]byte{"Bad Name": []byte(`{"production": "v1"}`)})
	if n := len(tab.Snapshot().Domains); n != 0 {
		t.Errorf("%d domains from malformed input", n)
	}
}

// One version serves one model: an instance registering another model
// under it is not routed to, and the version says so; the model agreed on
// first stays, until none of its instances is left.
func TestOneVersionOneModel(t *testing.T) {
	pushed := map[string][]string{}
	tab := newTable(pushed)
	first := ranker("a", "feed", "v1", true)
	impostor := ranker("b", "feed", "v1", true)
	impostor.Meta[consulx.MetaModelSHA256] = "sha-other" // sorts before "sha-v1"
	tab.SetRankers([]discovery.Instance{first})
	tab.SetRankers([]discovery.Instance{first, impostor})
	v := tab.Snapshot().Domains["feed"].Versions["v1"]
	if v.SHA256 != "sha-v1" || v.Total != 1 || !cmp.Equal(v.Addrs, []string{"a:1"}) || !strings.Contains(v.Conflict, "1 instance(s) registered another model") {
		t.Fatalf("version %+v", v)
	}
	if !cmp.Equal(pushed[RankerKey("feed", "v1")], []string{"a:1"}) {
		t.Fatalf("routed to %v", pushed[RankerKey("feed", "v1")])
	}
	// The first model's instances gone: the other one serves.
	tab.SetRankers([]discovery.Instance{impostor})
	if v := tab.Snapshot().Domains["feed"].Versions["v1"]; v.SHA256 != "sha-other" || v.Conflict != "" || v.Healthy != 1 {
		t.Fatalf("after the first left: %+v", v)
	}
}
