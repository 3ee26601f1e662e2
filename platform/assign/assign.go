// Package assign holds the pure functions that every place which assigns
// users to experiment arms or names impressions must agree on: the router's
// lab, and the edge client (the same code compiled to WebAssembly). It has
// no dependencies beyond the standard library.
package assign

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"slices"
	"strconv"
)

// Hash01 maps its parts to a uniform number in [0, 1).
func Hash01(parts ...string) float64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	// FNV's low bits mix poorly; fold the high half in.
	v := h.Sum64()
	v ^= v >> 33
	v *= 0xff51afd7ed558ccd
	v ^= v >> 33
	return float64(v>>11) / (1 << 53)
}

// Arm is one arm of an A/B test.
type Arm struct {
	Version string  `json:"version"`
	Weight  float64 `json:"weight"`
}

// AB returns the index of user's arm in an A/B test of domain with salt:
// sticky per user, in proportion to the weights (which are positive).
func AB(domain, salt string, arms []Arm, user string) int {
	var total float64
	for _, a := range arms {
		total += a.Weight
	}
	u := Hash01(domain, "ab", salt, user) * total
	for i, a := range arms {
		if u < a.Weight || i == len(arms)-1 {
			return i
		}
		u -= a.Weight
	}
	return len(arms) - 1
}

// InCanary reports whether user is in the canary group of version when it
// has sharePercent of the domain's users: internal users always, others
// sticky by hash.
func InCanary(domain, version string, sharePercent float64, internal []string, user string) bool {
	return slices.Contains(internal, user) || Hash01(domain, "canary", version, user) < sharePercent/100
}

// ImpressionID identifies one shown ad: a pure function of the domain, the
// user, the request ID, the ad and the slot, so identical requests get
// identical answers, and one request ID sent for another user or domain
// names other impressions.
func ImpressionID(domain, user, requestID, adID string, slot int) string {
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write([]byte{0})
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(requestID))
	h.Write([]byte{0})
	h.Write([]byte(adID))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(slot)))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Plan is what a client needs to assign its user as the router would: the
// production version and the experiment in force, for the strategies that
// assign by user (A/B tests and canaries). Bandits and interleaving draw per
// request from the router's live state; a Plan for them is production only.
type Plan struct {
	Domain     string      `json:"domain"`
	Production string      `json:"production"`
	Experiment string      `json:"experiment,omitempty"`
	AB         *ABPlan     `json:"ab,omitempty"`
	Canary     *CanaryPlan `json:"canary,omitempty"`
}

// ABPlan is an A/B test's assignment.
type ABPlan struct {
	Salt string `json:"salt"`
	Arms []Arm  `json:"arms"`
}

// CanaryPlan is a canary's assignment now.
type CanaryPlan struct {
	Version       string   `json:"version"`
	SharePercent  float64  `json:"share_percent"`
	InternalUsers []string `json:"internal_users,omitempty"`
	RolledBack    bool     `json:"rolled_back,omitempty"`
}

// Assignment is a user's version.
type Assignment struct {
	Strategy   string  `json:"strategy"` // production, ab or canary
	Version    string  `json:"version"`
	Group      string  `json:"group"`
	Propensity float64 `json:"propensity"`
	Experiment string  `json:"experiment,omitempty"`
}

// Assign assigns user as the router's lab does.
func (p Plan) Assign(user string) Assignment {
	a := Assignment{Strategy: "production", Version: p.Production, Group: "production", Propensity: 1, Experiment: p.Experiment}
	switch {
	case p.Canary != nil:
		c := p.Canary
		switch {
		case c.RolledBack:
			a.Group = "control"
		case slices.Contains(c.InternalUsers, user):
			a.Strategy, a.Version, a.Group = "canary", c.Version, "canary"
		case InCanary(p.Domain, c.Version, c.SharePercent, nil, user):
			a.Strategy, a.Version, a.Group, a.Propensity = "canary", c.Version, "canary", c.SharePercent/100
		default:
			a.Group, a.Propensity = "control", 1-c.SharePercent/100
		}
	case p.AB != nil && len(p.AB.Arms) > 0:
		var total float64
		for _, arm := range p.AB.Arms {
			total += arm.Weight
		}
		arm := p.AB.Arms[AB(p.Domain, p.AB.Salt, p.AB.Arms, user)]
		a.Strategy, a.Version, a.Group, a.Propensity = "ab", arm.Version, arm.Version, arm.Weight/total
	}
	return a
}
