// Package routing keeps the router's view of the domains: each domain's
// config from Consul KV (with last-good semantics) and its registered ranker
// versions and instances from the Consul catalog.
package routing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/discovery"
)

// ConfigPrefix is the Consul KV prefix of domain configs:
// adrank/domains/<domain>.
const ConfigPrefix = "adrank/domains/"

// Name is what a domain or version looks like.
var Name = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Config is a domain's JSON document at ConfigPrefix + domain:
//
//	{"production": "v1", "reserve_micros": 10000}
type Config struct {
	// Production is the version that serves the domain's traffic.
	Production string `json:"production"`
	// ReserveMicros is the domain's minimum cost per click; 0 means none.
	ReserveMicros int64 `json:"reserve_micros,omitempty"`
}

// ParseConfig decodes and checks a config document on its own; whether the
// production version exists is checked against the registry by the Table.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("bad JSON: %w", err)
	}
	if dec.More() {
		return c, errors.New("bad JSON: trailing data after the document")
	}
	if !Name.MatchString(c.Production) {
		return c, fmt.Errorf("production: %q is not a version name", c.Production)
	}
	if c.ReserveMicros < 0 {
		return c, fmt.Errorf("reserve_micros: %d, want >= 0", c.ReserveMicros)
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
}

// Production returns the production version's state, or nil.
func (d *Domain) Production() *Version {
	if d.Config == nil {
		return nil
	}
	return d.Versions[d.Config.Production]
}

// Snapshot is an immutable view of every domain.
type Snapshot struct {
	Domains map[string]*Domain
}

// Sorted returns the domains ordered by name.
func (s *Snapshot) Sorted() []*Domain {
	return slices.SortedFunc(maps.Values(s.Domains), func(a, b *Domain) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
}

// RankerKey is the resolver key of a domain's version.
func RankerKey(domain, version string) string { return "ranker/" + domain + "/" + version }

// good is a config that passed validation.
type good struct {
	cfg      Config
	raw      []byte
	loadedAt time.Time
}

// Table folds catalog and KV updates into Snapshots. Updates come from the
// watch goroutines; Snapshot is lock-free for the request path.
type Table struct {
	log      *slog.Logger
	now      func() time.Time
	onRanker func(key string, addrs []string)

	mu       sync.Mutex
	rankers  []discovery.Instance
	raw      map[string][]byte
	good     map[string]good
	errs     map[string]string
	keys     map[string]bool // resolver keys pushed so far
	synced   struct{ rankers, configs bool }
	syncedCh chan struct{}

	snap atomic.Pointer[Snapshot]
}

// NewTable returns an empty table. onRanker receives the healthy addresses
// of every domain/version key whenever they may have changed.
func NewTable(log *slog.Logger, onRanker func(key string, addrs []string)) *Table {
	t := &Table{
		log: log, now: time.Now, onRanker: onRanker,
		raw: map[string][]byte{}, good: map[string]good{}, errs: map[string]string{}, keys: map[string]bool{},
		syncedCh: make(chan struct{}),
	}
	t.snap.Store(&Snapshot{Domains: map[string]*Domain{}})
	return t
}

// Synced is closed once both the catalog and KV have been read once.
func (t *Table) Synced() <-chan struct{} { return t.syncedCh }

// Snapshot returns the current view.
func (t *Table) Snapshot() *Snapshot { return t.snap.Load() }

// SetRankers replaces the ranker instances.
func (t *Table) SetRankers(insts []discovery.Instance) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rankers = insts
	t.synced.rankers = true
	t.rebuild()
}

// SetConfigs replaces the raw KV values, keyed by domain.
func (t *Table) SetConfigs(raw map[string][]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.raw = raw
	t.synced.configs = true
	t.rebuild()
}

// rebuild is called with t.mu held.
func (t *Table) rebuild() {
	domains := map[string]*Domain{}
	domain := func(name string) *Domain {
		d, ok := domains[name]
		if !ok {
			d = &Domain{Name: name, Versions: map[string]*Version{}}
			domains[name] = d
		}
		return d
	}
	for _, in := range t.rankers {
		dn, vn := in.Meta[consulx.MetaDomain], in.Meta[consulx.MetaVersion]
		if !Name.MatchString(dn) || !Name.MatchString(vn) {
			continue
		}
		d := domain(dn)
		v, ok := d.Versions[vn]
		if !ok {
			v = &Version{Name: vn}
			d.Versions[vn] = v
		}
		v.Total++
		if v.SHA256 == "" {
			v.SHA256 = in.Meta[consulx.MetaModelSHA256]
		}
		if in.Healthy {
			v.Healthy++
			v.Addrs = append(v.Addrs, in.Addr)
		}
	}
	for name := range t.good {
		if _, ok := t.raw[name]; !ok {
			delete(t.good, name) // the key was deleted on purpose
			delete(t.errs, name)
			t.log.Info("domain config removed", "domain", name)
		}
	}
	for name, raw := range t.raw {
		if !Name.MatchString(name) {
			continue
		}
		d := domain(name)
		if g, ok := t.good[name]; ok && bytes.Equal(g.raw, raw) {
			delete(t.errs, name)
			continue
		}
		cfg, err := ParseConfig(raw)
		if err == nil {
			if _, ok := d.Versions[cfg.Production]; !ok {
				err = fmt.Errorf("production: version %q is not registered for domain %q", cfg.Production, name)
			}
		}
		if err != nil {
			msg := err.Error()
			if t.errs[name] != msg {
				t.log.Error("domain config rejected; last good config keeps serving", "domain", name, "key", ConfigPrefix+name, "error", msg)
				t.errs[name] = msg
			}
			continue
		}
		t.good[name] = good{cfg: cfg, raw: raw, loadedAt: t.now()}
		delete(t.errs, name)
		t.log.Info("domain config loaded", "domain", name, "production", cfg.Production, "reserve_micros", cfg.ReserveMicros)
	}
	for name, g := range t.good {
		d := domain(name)
		cfg := g.cfg
		d.Config, d.LoadedAt = &cfg, g.loadedAt
	}
	for name, msg := range t.errs {
		domain(name).ConfigError = msg
	}
	t.snap.Store(&Snapshot{Domains: domains})
	t.pushRankers(domains)
	if t.synced.rankers && t.synced.configs {
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
