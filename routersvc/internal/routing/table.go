// Package routing keeps the router's view of the domains: each domain's
// config from Consul KV (with last-good semantics) and its registered ranker
// versions and instances from the Consul catalog.
package routing

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/experiment"
	"github.com/adrank/adrank/platform/kvconfig"
	"github.com/adrank/adrank/platform/names"
)

// ConfigPrefix is the Consul KV prefix of domain configs:
// adrank/domains/<domain>.
const ConfigPrefix = "adrank/domains/"

// Name is what a domain or version looks like.
var Name = names.Pattern

// Config is a domain's JSON document at ConfigPrefix + domain:
//
//	{"production": "v1", "mode": "batch"}
type Config struct {
	// Production is the version that serves the domain's traffic.
	Production string `json:"production"`
	// Mode is how: ModeRealtime (rankers score each request; the default)
	// or ModeBatch (pCTRs from the domain's latest batch snapshot).
	Mode string `json:"mode,omitempty"`
}

// Modes.
const (
	ModeRealtime = "realtime"
	ModeBatch    = "batch"
)

// Batch reports whether the domain serves from its batch snapshot.
func (d *Domain) Batch() bool { return d.Config != nil && d.Config.Mode == ModeBatch }

// Mode is the domain's mode ("" without a config).
func (d *Domain) Mode() string {
	switch {
	case d.Config == nil:
		return ""
	case d.Config.Mode == "":
		return ModeRealtime
	}
	return d.Config.Mode
}

// ParseConfig decodes and checks a config document on its own; whether the
// production version exists is checked against the registry by the Table.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	if err := kvconfig.DecodeStrict(b, &c); err != nil {
		return c, fmt.Errorf("bad JSON: %w", err)
	}
	if !Name.MatchString(c.Production) {
		return c, fmt.Errorf("production: %q is not a version name", c.Production)
	}
	switch c.Mode {
	case "", ModeRealtime, ModeBatch:
	default:
		return c, fmt.Errorf("mode: %q is neither %q nor %q", c.Mode, ModeRealtime, ModeBatch)
	}
	return c, nil
}

// Version is one registered ranker version of a domain.
type Version struct {
	Name    string
	Healthy int
	Total   int
	SHA256  string
	Addrs   []string // healthy instances
	// Conflict says that instances of another model registered under this
	// version, and were left out.
	Conflict string
}

// Domain is one domain's state.
type Domain struct {
	Name string
	// Config is the config in force; nil when the domain never had a valid one.
	Config   *Config
	LoadedAt time.Time
	// ConfigError explains why the current KV value is not in force.
	ConfigError string
	Versions    map[string]*Version

	// Experiment is the experiment document in force (adrank/experiments/),
	// nil for none; ExperimentRaw its JSON.
	Experiment         *experiment.Experiment
	ExperimentRaw      []byte
	ExperimentLoadedAt time.Time
	ExperimentError    string
}

// ProductionVersion is the version serving the domain's traffic: the
// experiment's production when it names one, else the domain config's.
func (d *Domain) ProductionVersion() string {
	if d.Experiment != nil && d.Experiment.Production != "" {
		return d.Experiment.Production
	}
	if d.Config != nil {
		return d.Config.Production
	}
	return ""
}

// Production returns the production version's state, or nil.
func (d *Domain) Production() *Version {
	return d.Versions[d.ProductionVersion()]
}

// Healthy reports whether version has a healthy instance.
func (d *Domain) Healthy(version string) bool {
	v := d.Versions[version]
	return v != nil && v.Healthy > 0
}

// Snapshot is an immutable view of every domain.
type Snapshot struct {
	Domains map[string]*Domain
}

// Sorted returns the domains ordered by name.
func (s *Snapshot) Sorted() []*Domain {
	return slices.SortedFunc(maps.Values(s.Domains), func(a, b *Domain) int { return cmp.Compare(a.Name, b.Name) })
}

// RankerKey is the resolver key of a domain's version.
func RankerKey(domain, version string) string { return "ranker/" + domain + "/" + version }

// Table folds catalog and KV updates into Snapshots. Updates come from the
// watch goroutines; Snapshot is lock-free for the request path.
type Table struct {
	onRanker func(key string, addrs []string)
	configs  *kvconfig.Set[Config]
	exps     *kvconfig.Set[expDoc]

	mu       sync.Mutex
	versions map[string]map[string]*Version // domain -> version
	// agreed is each version's model (RankerKey -> sha256): the first one
	// seen serving it. An instance registering another model under the same
	// version is not routed to.
	agreed   map[string]string
	keys     map[string]bool // resolver keys pushed so far
	synced   struct{ rankers, configs, experiments bool }
	syncedCh chan struct{}

	snap atomic.Pointer[Snapshot]
}

// NewTable returns an empty table. onRanker receives the healthy addresses
// of every domain/version key whenever they may have changed.
func NewTable(log *slog.Logger, onRanker func(key string, addrs []string)) *Table {
	t := &Table{onRanker: onRanker, versions: map[string]map[string]*Version{}, agreed: map[string]string{}, keys: map[string]bool{}, syncedCh: make(chan struct{})}
	// A deleted domain config keeps serving while the domain has rankers:
	// a mistaken delete must not take a live domain down (publish drops
	// it once its rankers are gone too).
	t.configs = kvconfig.New(ConfigPrefix, log, t.parse).KeepDeleted()
	t.exps = kvconfig.New(experiment.Prefix, log, t.parseExperiment)
	t.snap.Store(&Snapshot{Domains: map[string]*Domain{}})
	return t
}

type expDoc struct {
	exp *experiment.Experiment
	raw []byte
}

// parseExperiment validates an experiment document against the registered
// versions; it runs with t.mu held.
func (t *Table) parseExperiment(domain string, raw []byte) (expDoc, error) {
	if !Name.MatchString(domain) {
		return expDoc{}, errors.New("not a domain name")
	}
	e, err := experiment.Parse(raw)
	if err != nil {
		return expDoc{}, err
	}
	if err := e.Validate(func(v string) bool { _, ok := t.versions[domain][v]; return ok }); err != nil {
		return expDoc{}, err
	}
	return expDoc{exp: e, raw: raw}, nil
}

// parse validates a domain config against the registered versions; it runs
// with t.mu held.
func (t *Table) parse(domain string, raw []byte) (Config, error) {
	if !Name.MatchString(domain) {
		return Config{}, errors.New("not a domain name")
	}
	c, err := ParseConfig(raw)
	if err != nil {
		return c, err
	}
	if _, ok := t.versions[domain][c.Production]; !ok {
		return c, fmt.Errorf("production: version %q is not registered for domain %q", c.Production, domain)
	}
	return c, nil
}

// Synced is closed once both the catalog and KV have been read once.
func (t *Table) Synced() <-chan struct{} { return t.syncedCh }

// Snapshot returns the current view.
func (t *Table) Snapshot() *Snapshot { return t.snap.Load() }

// SetRankers replaces the ranker instances.
func (t *Table) SetRankers(insts []discovery.Instance) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.versions = t.group(insts)
	t.synced.rankers = true
	t.publish(t.configs.Reevaluate(), t.exps.Reevaluate())
}

// SetConfigs replaces the raw KV values, keyed by domain.
func (t *Table) SetConfigs(raw map[string][]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.synced.configs = true
	t.publish(t.configs.Update(raw), t.exps.Reevaluate())
}

// SetExperiments replaces the raw experiment documents, keyed by domain.
func (t *Table) SetExperiments(raw map[string][]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.synced.experiments = true
	t.publish(t.configs.Reevaluate(), t.exps.Update(raw))
}

// group sorts instances into domains and versions. Each version serves
// one model: the one agreed on before, or else the one most of its
// instances serve (ties: the smaller sha256). Instances of another model
// are left out of routing, and the version says so (Conflict); t.mu is held.
func (t *Table) group(insts []discovery.Instance) map[string]map[string]*Version {
	type key struct{ domain, version string }
	by := map[key][]discovery.Instance{}
	for _, in := range insts {
		dn, vn := in.Meta[consulx.MetaDomain], in.Meta[consulx.MetaVersion]
		if Name.MatchString(dn) && Name.MatchString(vn) {
			by[key{dn, vn}] = append(by[key{dn, vn}], in)
		}
	}
	out := map[string]map[string]*Version{}
	agreed := map[string]string{}
	for k, ins := range by {
		count := map[string]int{}
		for _, in := range ins {
			count[in.Meta[consulx.MetaModelSHA256]]++
		}
		rk := RankerKey(k.domain, k.version)
		sha, ok := t.agreed[rk]
		if _, present := count[sha]; !ok || !present {
			sha = ""
			for s, n := range count {
				if sha == "" || n > count[sha] || (n == count[sha] && s < sha) {
					sha = s
				}
			}
		}
		agreed[rk] = sha
		v := &Version{Name: k.version, SHA256: sha}
		others := 0
		for _, in := range ins {
			if in.Meta[consulx.MetaModelSHA256] != sha {
				others++
				continue
			}
			v.Total++
			if in.Healthy {
				v.Healthy++
				v.Addrs = append(v.Addrs, in.Addr)
			}
		}
		if others > 0 {
			v.Conflict = fmt.Sprintf("%d instance(s) registered another model under %s/%s: not routed to (this version serves model %.12s...)", others, k.domain, k.version, sha)
		}
		if out[k.domain] == nil {
			out[k.domain] = map[string]*Version{}
		}
		out[k.domain][k.version] = v
	}
	t.agreed = agreed
	return out
}

// publish stores a new snapshot; it runs with t.mu held.
func (t *Table) publish(configs map[string]kvconfig.Entry[Config], exps map[string]kvconfig.Entry[expDoc]) {
	domains := map[string]*Domain{}
	for name, vs := range t.versions {
		domains[name] = &Domain{Name: name, Versions: vs}
	}
	domain := func(name string) *Domain {
		d, ok := domains[name]
		if !ok {
			d = &Domain{Name: name, Versions: map[string]*Version{}}
			domains[name] = d
		}
		return d
	}
	for name, e := range configs {
		if !Name.MatchString(name) {
			continue
		}
		if e.Error == kvconfig.DeletedError && len(t.versions[name]) == 0 {
			t.configs.Forget(name) // retired: config deleted and no ranker left; rankers coming back find no config
			continue
		}
		d := domain(name)
		if e.Valid {
			c := e.Value
			d.Config, d.LoadedAt = &c, e.LoadedAt
		}
		d.ConfigError = e.Error
	}
	for name, e := range exps {
		if !Name.MatchString(name) {
			continue
		}
		d := domain(name)
		if e.Valid {
			d.Experiment, d.ExperimentRaw, d.ExperimentLoadedAt = e.Value.exp, e.Value.raw, e.LoadedAt
		}
		d.ExperimentError = e.Error
	}
	t.snap.Store(&Snapshot{Domains: domains})
	t.pushRankers(domains)
	if t.synced.rankers && t.synced.configs && t.synced.experiments {
		select {
		case <-t.syncedCh:
		default:
			close(t.syncedCh)
		}
	}
}

func (t *Table) pushRankers(domains map[string]*Domain) {
	if t.onRanker == nil {
		return
	}
	seen := map[string]bool{}
	for _, d := range domains {
		for _, v := range d.Versions {
			k := RankerKey(d.Name, v.Name)
			seen[k] = true
			t.keys[k] = true
			t.onRanker(k, v.Addrs)
		}
	}
	for k := range t.keys {
		if !seen[k] {
			t.onRanker(k, nil)
			delete(t.keys, k)
		}
	}
}
