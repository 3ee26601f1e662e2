// Package experiment defines the experiment document a team declares for a
// domain in Consul KV at adrank/experiments/<domain>, and validates it.
//
//	{
//	  "production": "v1",
//	  "shadow": {"versions": ["v3"], "fraction": 1.0},
//	  "canary": {"version": "v2", "steps": [1, 5, 25, 50, 100], "stepInterval": "10m", "internalUsers": ["u1"]},
//	  "ab": {"salt": "feed-2026-11", "arms": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}]},
//	  "bandit": {"policy": "thompson", "versions": ["v1", "v2", "v3"]},
//	  "interleave": {"a": "v1", "b": "v2", "fraction": 0.1}
//	}
//
// At most one of canary, ab, bandit and interleave may be set; shadow can
// accompany any of them. The package has no service dependencies, so
// adrankctl validates documents with the same code the router runs.
package experiment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/adrank/adrank/platform/names"
)

// Prefix is the Consul KV prefix of experiment documents.
const Prefix = "adrank/experiments/"

// Name is what a domain or version looks like.
var Name = names.Pattern

// Experiment is one domain's document.
type Experiment struct {
	// Production overrides adrank/domains/<domain>'s production version while
	// this document is in force; empty keeps it.
	Production string      `json:"production,omitempty"`
	Shadow     *Shadow     `json:"shadow,omitempty"`
	Canary     *Canary     `json:"canary,omitempty"`
	AB         *AB         `json:"ab,omitempty"`
	Bandit     *Bandit     `json:"bandit,omitempty"`
	Interleave *Interleave `json:"interleave,omitempty"`
	Explore    *Explore    `json:"explore,omitempty"`
}

// Explore logs a share of the requests production serves, with what a new
// version needs to be evaluated on them before it serves anyone (off-policy
// evaluation): the candidates, their features, production's pCTRs, the ad
// shown in the first slot with the probability it had, and its click. In a
// logged request the first slot goes, with probability Epsilon, to a
// candidate drawn uniformly (charged nothing: the platform pays for
// exploration), so that every ad another version might put first has a
// known, non-zero chance of having been shown. It may accompany any
// strategy.
type Explore struct {
	Share float64 `json:"share"` // (0, 1]
	// Epsilon is within [0, 1]; absent, 0.1. 0 logs without exploring
	// (then only versions that agree with production can be evaluated).
	Epsilon *float64 `json:"epsilon,omitempty"`
	// Keep bounds the records kept for the domain (default 10,000), and
	// Retention how long they are kept (default 7 days).
	Keep      int      `json:"keep,omitempty"`
	Retention Duration `json:"retention,omitzero"`
}

// Defaults of Explore.
const (
	DefaultExploreEpsilon = 0.1
	DefaultExploreKeep    = 10_000
	MaxExploreKeep        = 100_000
	DefaultRetention      = 7 * 24 * time.Hour
	MaxRetention          = 365 * 24 * time.Hour
)

// EpsilonOrDefault is Epsilon, or its default.
func (x *Explore) EpsilonOrDefault() float64 {
	if x.Epsilon == nil {
		return DefaultExploreEpsilon
	}
	return *x.Epsilon
}

// KeepOrDefault is Keep, or its default.
func (x *Explore) KeepOrDefault() int {
	if x.Keep == 0 {
		return DefaultExploreKeep
	}
	return x.Keep
}

// RetentionOrDefault is Retention, or its default.
func (x *Explore) RetentionOrDefault() time.Duration {
	if x.Retention.Duration == 0 {
		return DefaultRetention
	}
	return x.Retention.Duration
}

// Shadow mirrors a fraction of requests to other versions, off the
// critical path.
type Shadow struct {
	Versions []string `json:"versions"`
	Fraction float64  `json:"fraction"` // (0, 1]; 0 means 1
}

// Canary sends a stepped share of users, plus internal users, to Version.
type Canary struct {
	Version       string     `json:"version"`
	Steps         []float64  `json:"steps"`        // percent of users, increasing, within (0, 100]
	StepInterval  Duration   `json:"stepInterval"` // time at each step while guardrails hold
	InternalUsers []string   `json:"internalUsers,omitempty"`
	Guardrails    Guardrails `json:"guardrails,omitzero"`
}

// Guardrails roll a canary back when any fails.
type Guardrails struct {
	// MaxErrorRate is the highest share of failed requests (default 0.02).
	MaxErrorRate float64 `json:"maxErrorRate,omitempty"`
	// MaxP99 is the highest p99 ranker latency (default 250ms).
	MaxP99 Duration `json:"maxP99,omitempty"`
	// Alpha is the chance, over the whole canary however often it is
	// checked, that a canary as good as production is rolled back for a
	// lower CTR or revenue per impression (default 0.01).
	Alpha float64 `json:"alpha,omitempty"`
	// Drop is the relative drop in CTR or revenue per impression that those
	// sequential tests are tuned to catch soonest (default 0.2): smaller
	// drops are caught too, later.
	Drop float64 `json:"drop,omitempty"`
	// MinRequests is how many canary requests the error and latency
	// guardrails wait for (default 50).
	MinRequests int `json:"minRequests,omitempty"`
}

// AB splits users among arms by hash(salt, user_id), in proportion to the
// weights. The first arm is the control the others are compared with.
type AB struct {
	Salt string `json:"salt"`
	Arms []Arm  `json:"arms"`
	// MDE is the relative lift the sample size is planned for (default 0.05).
	MDE float64 `json:"mde,omitempty"`
	// Alpha is the test's level (default 0.05); Power its power (default 0.8).
	Alpha float64 `json:"alpha,omitempty"`
	Power float64 `json:"power,omitempty"`
}

// Arm is one A/B arm.
type Arm struct {
	Version string  `json:"version"`
	Weight  float64 `json:"weight"`
}

// Bandit policies.
const (
	Thompson      = "thompson"
	UCB1          = "ucb1"
	EpsilonGreedy = "epsilon_greedy"
)

// Bandit allocates traffic among Versions, adapting to clicks.
type Bandit struct {
	Policy   string   `json:"policy"`
	Versions []string `json:"versions"`
	Epsilon  float64  `json:"epsilon,omitempty"` // epsilon_greedy's exploration share (default 0.1)
	// MinShare is every arm's floor: whatever the policy, no arm's
	// probability (its logged propensity) falls below it, so logs can be
	// reweighted to evaluate another policy. Within [0, 1/len(versions)];
	// default 0.
	MinShare float64 `json:"minShare,omitempty"`
	// PositionBias is the chance that a user examines each slot, the
	// first 1 and none rising (from a position-bias study): an impression
	// in slot s counts PositionBias[s] towards its arm's exposure, so an
	// arm is not judged by where its ads happened to be shown (slots past
	// the list count as its last). Empty: every impression counts 1.
	PositionBias []float64 `json:"positionBias,omitempty"`
	// HalfLife, when set, discounts every arm's counts by half over it
	// (discounted Thompson sampling, Raj & Kalyani 2017, and the same
	// discount under the other policies), so the bandit follows a model
	// whose quality drifts.
	HalfLife Duration `json:"halfLife,omitzero"`
}

// Exposure is what an impression in slot (1-based) counts towards its arm.
func (b *Bandit) Exposure(slot int) float64 {
	if b == nil || len(b.PositionBias) == 0 {
		return 1
	}
	return b.PositionBias[min(max(slot, 1), len(b.PositionBias))-1]
}

// Interleave merges A's and B's rankings by team draft for a fraction of
// requests.
type Interleave struct {
	A string `json:"a,omitempty"`
	B string `json:"b,omitempty"`
	// Versions, instead of A and B, multileaves two or more versions by
	// team draft (Schuth et al. 2014): one experiment compares them all,
	// pair by pair.
	Versions []string `json:"versions,omitempty"`
	Fraction float64  `json:"fraction"` // (0, 1]
	// Alpha is the level of the always-valid verdict (default 0.05).
	Alpha float64 `json:"alpha,omitempty"`
}

// Teams are the interleaved versions: A and B, or Versions.
func (in *Interleave) Teams() []string {
	if len(in.Versions) > 0 {
		return in.Versions
	}
	return []string{in.A, in.B}
}

// MaxTeams bounds the versions one interleaving experiment multileaves.
const MaxTeams = 10

// Duration is a time.Duration written as a Go duration string ("10m").
type Duration struct{ time.Duration }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"10m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// IsZero reports an unset duration.
func (d Duration) IsZero() bool { return d.Duration == 0 }

// Parse decodes a document strictly and checks its structure, without
// knowing which versions exist (Validate does that).
func Parse(raw []byte) (*Experiment, error) {
	if len(raw) > MaxDocument {
		return nil, fmt.Errorf("the document is %d bytes, at most %d", len(raw), MaxDocument)
	}
	var e Experiment
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("bad JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("bad JSON: trailing data after the document")
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Bounds of a document: every string, list and number in it is bounded, so
// that no document can make the router's answers, state keys or sums grow
// without limit.
const (
	MaxDocument      = 64 << 10 // bytes
	MaxSalt          = 64       // bytes
	MaxListed        = 100      // versions, arms, steps
	MaxInternalUsers = 1000
	MaxUserID        = 256
	MaxWeight        = 1e6
	// MaxMDE bounds the A/B test's minimal detectable effect (a relative
	// lift of 1000%); MaxMinRequests and MaxP99 bound the guardrails.
	MaxMDE         = 10
	MaxMinRequests = 1_000_000_000
	MaxGuardP99    = time.Hour
	// MinStepInterval is the shortest canary step: a step shorter than the
	// lab's refresh would skip steps without looking at the guardrails.
	MinStepInterval = time.Second
)

func (e *Experiment) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	list := func(field string, n int) {
		if n > MaxListed {
			bad("%s: %d entries, at most %d", field, n, MaxListed)
		}
	}
	version := func(field, v string) {
		if !Name.MatchString(v) {
			bad("%s: %q is not a version name", field, v)
		}
	}
	if e.Production != "" {
		version("production", e.Production)
	}
	var active []string
	if s := e.Shadow; s != nil {
		if len(s.Versions) == 0 {
			bad("shadow.versions: at least one version")
		}
		list("shadow.versions", len(s.Versions))
		for i, v := range s.Versions {
			version(fmt.Sprintf("shadow.versions[%d]", i), v)
		}
		if !(s.Fraction >= 0 && s.Fraction <= 1) {
			bad("shadow.fraction: %v, want within (0, 1]", s.Fraction)
		}
	}
	if x := e.Explore; x != nil {
		switch {
		case !(x.Share > 0 && x.Share <= 1):
			bad("explore.share: %v, want within (0, 1]", x.Share)
		case x.Epsilon != nil && !(*x.Epsilon >= 0 && *x.Epsilon <= 1):
			bad("explore.epsilon: %v, want within [0, 1]", *x.Epsilon)
		case x.Keep < 0 || x.Keep > MaxExploreKeep:
			bad("explore.keep: %d, want within [0, %d]", x.Keep, MaxExploreKeep)
		case x.Retention.Duration < 0 || x.Retention.Duration > 0 && x.Retention.Duration < time.Minute || x.Retention.Duration > MaxRetention:
			bad("explore.retention: %v, want within [1m, %v] (or none)", x.Retention.Duration, MaxRetention)
		}
	}
	if c := e.Canary; c != nil {
		active = append(active, "canary")
		version("canary.version", c.Version)
		if len(c.Steps) == 0 {
			bad("canary.steps: at least one step")
		}
		list("canary.steps", len(c.Steps))
		if len(c.InternalUsers) > MaxInternalUsers {
			bad("canary.internalUsers: %d users, at most %d", len(c.InternalUsers), MaxInternalUsers)
		}
		for i, u := range c.InternalUsers {
			if u == "" || len(u) > MaxUserID || !cleanText(u) {
				bad("canary.internalUsers[%d]: want 1 to %d bytes without control characters", i, MaxUserID)
			}
		}
		for i, s := range c.Steps {
			if !(s > 0 && s <= 100) || (i > 0 && s <= c.Steps[i-1]) {
				bad("canary.steps[%d]: %v, want increasing percentages within (0, 100]", i, s)
			}
		}
		if c.StepInterval.Duration < MinStepInterval {
			bad("canary.stepInterval: %v, want at least %v", c.StepInterval.Duration, MinStepInterval)
		}
		g := c.Guardrails
		if !(g.MaxErrorRate >= 0 && g.MaxErrorRate <= 1) || !(g.Alpha >= 0 && g.Alpha < 1) || !(g.Drop >= 0 && g.Drop <= 1) || g.MaxP99.Duration < 0 || g.MaxP99.Duration > MaxGuardP99 ||
			g.MinRequests < 0 || g.MinRequests > MaxMinRequests {
			bad("canary.guardrails: out of range: %+v", g)
		}
	}
	if ab := e.AB; ab != nil {
		active = append(active, "ab")
		switch {
		case ab.Salt == "":
			bad("ab.salt: required, so that assignment is sticky and independent of other experiments")
		case len(ab.Salt) > MaxSalt || !cleanText(ab.Salt):
			bad("ab.salt: %d bytes, want at most %d without control characters", len(ab.Salt), MaxSalt)
		}
		list("ab.arms", len(ab.Arms))
		if len(ab.Arms) < 2 {
			bad("ab.arms: %d arms, want at least 2", len(ab.Arms))
		}
		seen := map[string]bool{}
		for i, a := range ab.Arms {
			version(fmt.Sprintf("ab.arms[%d].version", i), a.Version)
			if !(a.Weight > 0 && a.Weight <= MaxWeight) {
				bad("ab.arms[%d].weight: %v, want within (0, %g]", i, a.Weight, MaxWeight)
			}
			if seen[a.Version] {
				bad("ab.arms[%d].version: %q appears twice", i, a.Version)
			}
			seen[a.Version] = true
		}
		if !(ab.MDE >= 0 && ab.MDE <= MaxMDE) || !(ab.Alpha >= 0 && ab.Alpha < 1) || !(ab.Power >= 0 && ab.Power < 1) {
			bad("ab: mde, alpha or power out of range")
		}
	}
	if b := e.Bandit; b != nil {
		active = append(active, "bandit")
		switch b.Policy {
		case Thompson, UCB1, EpsilonGreedy:
		default:
			bad("bandit.policy: %q, want thompson, ucb1 or epsilon_greedy", b.Policy)
		}
		if len(b.Versions) < 2 {
			bad("bandit.versions: %d versions, want at least 2", len(b.Versions))
		}
		list("bandit.versions", len(b.Versions))
		seen := map[string]bool{}
		for i, v := range b.Versions {
			version(fmt.Sprintf("bandit.versions[%d]", i), v)
			if seen[v] {
				bad("bandit.versions[%d]: %q appears twice", i, v)
			}
			seen[v] = true
		}
		if !(b.Epsilon >= 0 && b.Epsilon <= 1) {
			bad("bandit.epsilon: %v, want within [0, 1]", b.Epsilon)
		}
		if k := len(b.Versions); k > 0 && !(b.MinShare >= 0 && b.MinShare <= 1/float64(k)) {
			bad("bandit.minShare: %v, want within [0, 1/%d]", b.MinShare, k)
		}
		list("bandit.positionBias", len(b.PositionBias))
		for i, w := range b.PositionBias {
			switch {
			case i == 0 && w != 1:
				bad("bandit.positionBias[0]: %v, want 1 (the other slots are relative to the first)", w)
			case !(w > 0 && w <= 1):
				bad("bandit.positionBias[%d]: %v, want within (0, 1]", i, w)
			case i > 0 && w > b.PositionBias[i-1]:
				bad("bandit.positionBias[%d]: %v is above the slot before it", i, w)
			}
		}
		if b.HalfLife.Duration < 0 || b.HalfLife.Duration > 0 && b.HalfLife.Duration < time.Second {
			bad("bandit.halfLife: %v, want at least 1s (or none)", b.HalfLife.Duration)
		}
	}
	if in := e.Interleave; in != nil {
		active = append(active, "interleave")
		switch {
		case len(in.Versions) > 0 && (in.A != "" || in.B != ""):
			bad("interleave: give a and b, or versions, not both")
		case len(in.Versions) > 0:
			if len(in.Versions) < 2 || len(in.Versions) > MaxTeams {
				bad("interleave.versions: %d versions, want 2 to %d", len(in.Versions), MaxTeams)
			}
			seen := map[string]bool{}
			for i, v := range in.Versions {
				version(fmt.Sprintf("interleave.versions[%d]", i), v)
				if seen[v] {
					bad("interleave.versions[%d]: %q appears twice", i, v)
				}
				seen[v] = true
			}
		default:
			version("interleave.a", in.A)
			version("interleave.b", in.B)
			if in.A == in.B {
				bad("interleave: a and b are both %q", in.A)
			}
		}
		if !(in.Fraction > 0 && in.Fraction <= 1) {
			bad("interleave.fraction: %v, want within (0, 1]", in.Fraction)
		}
		if !(in.Alpha >= 0 && in.Alpha < 1) {
			bad("interleave.alpha: %v, want within (0, 1)", in.Alpha)
		}
	}
	if len(active) > 1 {
		bad("%s are exclusive: at most one of canary, ab, bandit and interleave at a time", strings.Join(active, " and "))
	}
	return errors.Join(errs...)
}

// Versions lists every version the document names.
func (e *Experiment) Versions() []string {
	var vs []string
	if e.Production != "" {
		vs = append(vs, e.Production)
	}
	if e.Shadow != nil {
		vs = append(vs, e.Shadow.Versions...)
	}
	if e.Canary != nil {
		vs = append(vs, e.Canary.Version)
	}
	if e.AB != nil {
		for _, a := range e.AB.Arms {
			vs = append(vs, a.Version)
		}
	}
	if e.Bandit != nil {
		vs = append(vs, e.Bandit.Versions...)
	}
	if e.Interleave != nil {
		vs = append(vs, e.Interleave.Teams()...)
	}
	slices.Sort(vs)
	return slices.Compact(vs)
}

// Validate checks that every version the document names is registered.
func (e *Experiment) Validate(registered func(version string) bool) error {
	var errs []error
	for _, v := range e.Versions() {
		if !registered(v) {
			errs = append(errs, fmt.Errorf("unknown version %q: no ranker of this domain is registered with it", v))
		}
	}
	return errors.Join(errs...)
}

// Strategy names the exclusive strategy in force: "canary", "ab", "bandit",
// "interleave" or "" for none.
func (e *Experiment) Strategy() string {
	switch {
	case e.Canary != nil:
		return "canary"
	case e.AB != nil:
		return "ab"
	case e.Bandit != nil:
		return "bandit"
	case e.Interleave != nil:
		return "interleave"
	}
	return ""
}

// ID identifies the experiment's exclusive strategy and its parameters that
// define the groups, so that a changed experiment starts new counters:
// e.g. "ab:feed-2026-11:v1,v2".
func (e *Experiment) ID() string {
	switch {
	case e.Canary != nil:
		return "canary:" + e.Canary.Version
	case e.AB != nil:
		vs := make([]string, len(e.AB.Arms))
		for i, a := range e.AB.Arms {
			vs[i] = a.Version
		}
		return "ab:" + e.AB.Salt + ":" + strings.Join(vs, ",")
	case e.Bandit != nil:
		return "bandit:" + e.Bandit.Policy + ":" + strings.Join(e.Bandit.Versions, ",")
	case e.Interleave != nil:
		return "interleave:" + strings.Join(e.Interleave.Teams(), ",")
	}
	return ""
}

// cleanText reports whether s is UTF-8 without control characters.
func cleanText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) || unicode.Is(unicode.Bidi_Control, r) {
			return false
		}
	}
	return true
}
