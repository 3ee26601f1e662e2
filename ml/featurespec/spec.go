// Package featurespec is the feature store's schema: the entities the store
// keeps (a user, an ad, a user x topic cross, ...), each entity's features
// with their types, bounds and missing-value policies, and the features the
// store derives from the request. featuresvc validates every snapshot and
// every online write against it, and a ranker refuses a model that names a
// feature the spec does not declare.
//
// A spec is a JSON document:
//
//	{"entities": [
//	  {"name": "user", "keys": ["user_id"], "features": [
//	    {"name": "user_age", "type": "int", "min": 0, "max": 150},
//	    {"name": "user_hist_ctr", "type": "float", "min": 0, "max": 1, "missing": "nan"}]},
//	  {"name": "ad", "keys": ["ad_id"], "features": [
//	    {"name": "topic", "type": "string"}]},
//	  {"name": "user_topic", "keys": ["user_id", "topic"], "features": [
//	    {"name": "user_ad_interest", "type": "float", "missing": "default", "default": 0}]}],
//	 "derived": [{"name": "query_match", "kind": "query_contains", "of": "topic"}]}
//
// "counters" adds real-time impression and click counts over sliding
// windows (see Counter). The entity "user" is keyed by the request's user, "ad" by each candidate
// ad; any other entity is a cross keyed by the user and one of the ad's
// string features (its second key names that feature), served in each ad's
// row. The request-context features (ctx_*) are always served.
package featurespec

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Entity names with a fixed role.
const (
	User = "user"
	Ad   = "ad"
)

// Types of a feature. Numbers (float, int, bool) are served to models as
// float64; a string feature is an ad's category, used as a cross's key or by
// a derived feature, never served as a number.
const (
	Float  = "float"
	Int    = "int"
	Bool   = "bool"
	String = "string"
)

// Missing-value policies: what a row without the value (an empty cell, a
// null, a NaN) means.
const (
	// MissingNaN serves the feature as missing (NaN): models handle it.
	MissingNaN = "nan"
	// MissingReject refuses the row: the feature must always be present.
	MissingReject = "reject"
	// MissingDefault serves Default in its place.
	MissingDefault = "default"
)

// Limits on a spec and on the values it admits.
const (
	MaxEntities    = 16
	MaxFeatures    = 256 // per entity
	MaxKeyBytes    = 256
	MaxStringBytes = 256
	MaxSpecBytes   = 64 << 10
)

// ContextFeatures are derived from every request's context and always served.
var ContextFeatures = []string{"ctx_hour_sin", "ctx_hour_cos", "ctx_mobile", "ctx_desktop", "ctx_tablet", "ctx_has_query"}

// QueryContains is the derived kind that is 1 when the request's query holds
// the ad's string feature Of as a word (case-insensitive), 0 when it does
// not, and missing when the ad lacks the feature.
const QueryContains = "query_contains"

// Spec is a parsed, valid feature spec. Do not modify it after Parse.
type Spec struct {
	Entities []*Entity `json:"entities"`
	Derived  []Derived `json:"derived,omitempty"`
	Counters []Counter `json:"counters,omitempty"`
}

// Counter asks for real-time counters of an entity (user, ad or a cross):
// its impressions and clicks over each window, served as
// <entity>_impressions_<window> and <entity>_clicks_<window>, counted from
// the activity the router reports. A window is written as minutes or hours
// ("30m", "1h", "24h"), from 1m to 168h.
type Counter struct {
	Entity  string   `json:"entity"`
	Windows []string `json:"windows"`

	durations []time.Duration
}

// MaxWindows bounds a counter's windows.
const MaxWindows = 4

var windowRE = regexp.MustCompile(`^[1-9][0-9]{0,3}[mh]$`)

// Durations are the counter's windows.
func (c *Counter) Durations() []time.Duration { return c.durations }

// Names are the counter's served feature names, for each window its
// impressions then its clicks.
func (c *Counter) Names() []string {
	var out []string
	for _, w := range c.Windows {
		out = append(out, c.Entity+"_impressions_"+w, c.Entity+"_clicks_"+w)
	}
	return out
}

// Counter returns the counter of the named entity, or nil.
func (s *Spec) Counter(entity string) *Counter {
	for i := range s.Counters {
		if s.Counters[i].Entity == entity {
			return &s.Counters[i]
		}
	}
	return nil
}

// Entity is one kind of thing the store keeps rows of.
type Entity struct {
	Name     string     `json:"name"`
	Keys     []string   `json:"keys"`
	Features []*Feature `json:"features"`
}

// Feature is one column of an entity.
type Feature struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Missing string   `json:"missing,omitempty"`
	Default *float64 `json:"default,omitempty"`
	Min     *float64 `json:"min,omitempty"`
	Max     *float64 `json:"max,omitempty"`
}

// Derived is a feature computed per ad from the request and the ad's row.
type Derived struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	Of   string `json:"of"`
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

//go:embed demo.json
var demo []byte

// Demo is the spec of the synthetic world's features, the default.
func Demo() *Spec {
	s, err := Parse(demo)
	if err != nil {
		panic("featurespec: the embedded demo spec is invalid: " + err.Error())
	}
	return s
}

// Load reads and parses a spec file; an empty path is the demo spec.
func Load(path string) (*Spec, error) {
	if path == "" {
		return Demo(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("feature spec %s: %w", path, err)
	}
	return s, nil
}

// Parse parses and validates a spec document. Errors name the field.
func Parse(b []byte) (*Spec, error) {
	if len(b) > MaxSpecBytes {
		return nil, fmt.Errorf("%d bytes, at most %d", len(b), MaxSpecBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, err
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Spec) validate() error {
	if len(s.Entities) == 0 || len(s.Entities) > MaxEntities {
		return fmt.Errorf("entities: %d entities, want 1 to %d", len(s.Entities), MaxEntities)
	}
	served := map[string]string{} // feature name -> where it is declared
	for _, c := range ContextFeatures {
		served[c] = "the request context"
	}
	ents := map[string]*Entity{}
	for i, e := range s.Entities {
		at := fmt.Sprintf("entities[%d]", i)
		if e == nil {
			return fmt.Errorf("%s: null", at)
		}
		if !nameRE.MatchString(e.Name) {
			return fmt.Errorf("%s.name: %q is not a lower-case name", at, e.Name)
		}
		if ents[e.Name] != nil {
			return fmt.Errorf("%s.name: entity %q declared twice", at, e.Name)
		}
		ents[e.Name] = e
		if len(e.Features) == 0 || len(e.Features) > MaxFeatures {
			return fmt.Errorf("%s.features: %d features, want 1 to %d", at, len(e.Features), MaxFeatures)
		}
		cols := map[string]bool{}
		for j, k := range e.Keys {
			if !nameRE.MatchString(k) {
				return fmt.Errorf("%s.keys[%d]: %q is not a lower-case name", at, j, k)
			}
			cols[k] = true
		}
		for j, f := range e.Features {
			fat := fmt.Sprintf("%s.features[%d]", at, j)
			if f == nil {
				return fmt.Errorf("%s: null", fat)
			}
			if err := f.validate(); err != nil {
				return fmt.Errorf("%s: %w", fat, err)
			}
			if cols[f.Name] {
				return fmt.Errorf("%s.name: %q is already a key or feature of %s", fat, f.Name, e.Name)
			}
			cols[f.Name] = true
			if f.Type == String {
				continue
			}
			if where, ok := served[f.Name]; ok {
				return fmt.Errorf("%s.name: %q is already served, from %s", fat, f.Name, where)
			}
			served[f.Name] = "entity " + e.Name
		}
	}
	for name, e := range ents {
		switch name {
		case User, Ad:
			if len(e.Keys) != 1 {
				return fmt.Errorf("entity %s: keys: want one key, got %d", name, len(e.Keys))
			}
		default:
			ad := ents[Ad]
			if ents[User] == nil || ad == nil || len(e.Keys) != 2 {
				return fmt.Errorf("entity %s: a cross needs entities user and ad and two keys, the user's and an ad string feature's", name)
			}
			if e.Keys[0] != ents[User].Keys[0] {
				return fmt.Errorf("entity %s: keys[0]: %q, want the user's key %q", name, e.Keys[0], ents[User].Keys[0])
			}
			if f := ad.Feature(e.Keys[1]); f == nil || f.Type != String {
				return fmt.Errorf("entity %s: keys[1]: %q is not a string feature of entity ad", name, e.Keys[1])
			}
		}
	}
	for i := range s.Counters {
		c := &s.Counters[i]
		at := fmt.Sprintf("counters[%d]", i)
		if ents[c.Entity] == nil {
			return fmt.Errorf("%s.entity: %q is not an entity of the spec", at, c.Entity)
		}
		if s.Counter(c.Entity) != c {
			return fmt.Errorf("%s.entity: entity %q has counters already", at, c.Entity)
		}
		if len(c.Windows) == 0 || len(c.Windows) > MaxWindows {
			return fmt.Errorf("%s.windows: %d windows, want 1 to %d", at, len(c.Windows), MaxWindows)
		}
		for j, w := range c.Windows {
			d, err := time.ParseDuration(w)
			if !windowRE.MatchString(w) || err != nil || d < time.Minute || d > 168*time.Hour {
				return fmt.Errorf("%s.windows[%d]: %q, want minutes or hours from 1m to 168h, such as 1h", at, j, w)
			}
			if slices.Contains(c.durations, d) {
				return fmt.Errorf("%s.windows[%d]: %q twice", at, j, w)
			}
			c.durations = append(c.durations, d)
		}
		for _, name := range c.Names() {
			if where, ok := served[name]; ok {
				return fmt.Errorf("%s: %q is already served, from %s", at, name, where)
			}
			served[name] = "counters"
		}
	}
	for i, d := range s.Derived {
		at := fmt.Sprintf("derived[%d]", i)
		if !nameRE.MatchString(d.Name) {
			return fmt.Errorf("%s.name: %q is not a lower-case name", at, d.Name)
		}
		if where, ok := served[d.Name]; ok {
			return fmt.Errorf("%s.name: %q is already served, from %s", at, d.Name, where)
		}
		served[d.Name] = "derived"
		if d.Kind != QueryContains {
			return fmt.Errorf("%s.kind: %q, want %q", at, d.Kind, QueryContains)
		}
		if ents[Ad] == nil || ents[Ad].Feature(d.Of) == nil || ents[Ad].Feature(d.Of).Type != String {
			return fmt.Errorf("%s.of: %q is not a string feature of entity ad", at, d.Of)
		}
	}
	return nil
}

func (f *Feature) validate() error {
	if !nameRE.MatchString(f.Name) {
		return fmt.Errorf("name: %q is not a lower-case name", f.Name)
	}
	switch f.Type {
	case Float, Int, Bool, String:
	default:
		return fmt.Errorf("type: %q, want float, int, bool or string", f.Type)
	}
	if f.Missing == "" {
		f.Missing = MissingNaN
	}
	switch f.Missing {
	case MissingNaN, MissingReject:
		if f.Default != nil {
			return fmt.Errorf("default: set, but missing is %q", f.Missing)
		}
	case MissingDefault:
		if f.Type == String {
			return fmt.Errorf("missing: a string feature has no default")
		}
		if f.Default == nil {
			return fmt.Errorf("default: missing is %q but no default is set", MissingDefault)
		}
	default:
		return fmt.Errorf("missing: %q, want nan, reject or default", f.Missing)
	}
	for name, b := range map[string]*float64{"min": f.Min, "max": f.Max, "default": f.Default} {
		if b != nil && (math.IsNaN(*b) || math.IsInf(*b, 0)) {
			return fmt.Errorf("%s: not a finite number", name)
		}
	}
	if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
		return fmt.Errorf("min %g above max %g", *f.Min, *f.Max)
	}
	if f.Default != nil {
		if err := f.Check(*f.Default); err != nil {
			return fmt.Errorf("default: %w", err)
		}
	}
	return nil
}

// Check reports whether v, a present number, is a valid value of f.
func (f *Feature) Check(v float64) error {
	switch {
	case math.IsNaN(v):
		return fmt.Errorf("NaN is not a value (leave it empty for missing)")
	case math.IsInf(v, 0):
		return fmt.Errorf("%g is not finite", v)
	case f.Type == Int && (v != math.Trunc(v) || math.Abs(v) > 1<<53):
		return fmt.Errorf("%g is not an integer", v)
	case f.Type == Bool && v != 0 && v != 1:
		return fmt.Errorf("%g is not a bool (0 or 1)", v)
	case f.Min != nil && v < *f.Min:
		return fmt.Errorf("%g below its minimum %g", v, *f.Min)
	case f.Max != nil && v > *f.Max:
		return fmt.Errorf("%g above its maximum %g", v, *f.Max)
	}
	return nil
}

// Entity returns the named entity, or nil.
func (s *Spec) Entity(name string) *Entity {
	for _, e := range s.Entities {
		if e.Name == name {
			return e
		}
	}
	return nil
}

// Crosses returns the cross entities (neither user nor ad), in spec order.
func (s *Spec) Crosses() []*Entity {
	var out []*Entity
	for _, e := range s.Entities {
		if e.Name != User && e.Name != Ad {
			out = append(out, e)
		}
	}
	return out
}

// Feature returns the named feature of e, or nil.
func (e *Entity) Feature(name string) *Feature {
	for _, f := range e.Features {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// Numeric returns e's features served as numbers, in spec order.
func (e *Entity) Numeric() []*Feature {
	var out []*Feature
	for _, f := range e.Features {
		if f.Type != String {
			out = append(out, f)
		}
	}
	return out
}

// Strings returns e's string features, in spec order.
func (e *Entity) Strings() []*Feature {
	var out []*Feature
	for _, f := range e.Features {
		if f.Type == String {
			out = append(out, f)
		}
	}
	return out
}

// Served lists every feature name a model can use: the entities' numeric
// features, the derived ones and the context's, sorted.
func (s *Spec) Served() []string {
	out := slices.Clone(ContextFeatures)
	for _, e := range s.Entities {
		for _, f := range e.Numeric() {
			out = append(out, f.Name)
		}
	}
	for _, d := range s.Derived {
		out = append(out, d.Name)
	}
	for _, c := range s.Counters {
		out = append(out, c.Names()...)
	}
	slices.Sort(out)
	return out
}

// Unserved lists the names among features that the spec does not declare: a
// model naming one would find it missing on every request.
func (s *Spec) Unserved(features []string) []string {
	served := s.Served()
	var out []string
	for _, f := range features {
		if _, ok := slices.BinarySearch(served, f); !ok {
			out = append(out, f)
		}
	}
	return out
}

// CheckModel refuses a model whose features the spec does not all declare,
// naming them.
func (s *Spec) CheckModel(model string, features []string) error {
	if unknown := s.Unserved(features); len(unknown) > 0 {
		return fmt.Errorf("model %s names features the feature spec does not declare: %s (it declares %s)",
			model, strings.Join(unknown, ", "), strings.Join(s.Served(), ", "))
	}
	return nil
}
