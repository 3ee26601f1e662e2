package lab

import (
	"fmt"
	"slices"

	"github.com/adrank/adrank/platform/assign"
	"github.com/adrank/adrank/platform/experiment"
)

// Strategy is how a request was assigned its version. Its value is what
// the store keeps with each impression.
type Strategy string

// Strategies.
const (
	Production  Strategy = "production"
	Canary      Strategy = "canary"
	AB          Strategy = "ab"
	Bandit      Strategy = "bandit"
	Interleaved Strategy = "interleaved"
)

// The groups of interleaved impressions: "a" or "b", the team that
// picked the ad, or AgreedGroup for an ad in the first slots on which both
// rankers agree (the same ads in the same order). A click there tells
// nothing of which ranker users prefer: team draft shows both rankers'
// common prefix first, and its credit would be decided by the coin alone.
// So it is not credited: leaving out noise of mean zero keeps the test
// valid and makes it quicker.
const (
	InterleavedGroup = "interleaved"
	AgreedGroup      = "agreed"
)

// Domain is what the lab needs of a domain's state.
type Domain struct {
	Production string
	Exp        *experiment.Experiment // nil: none
	ExpRaw     []byte
	// Healthy reports whether a version has a healthy instance.
	Healthy func(version string) bool
}

// Assignment is how one request is served.
type Assignment struct {
	Strategy Strategy
	Version  string // serving version; team A with interleaving
	Other    string // team B with interleaving
	// Teams are every interleaved version (Version and Other first).
	Teams []string
	// Agreed is, with interleaving, how many first slots both rankers
	// fill with the same ads in the same order.
	Agreed     int
	Group      string // arm, canary group or bandit arm; "production" otherwise
	Propensity float64
	Experiment string // experiment ID, "" for none
	Fallback   string // why production serves instead
	Shadow     []string
	// bandit is the bandit an arm was drawn from, for its rewards.
	bandit *experiment.Bandit
	// explore, when set, logs the request for off-policy evaluation.
	explore *experiment.Explore
	domain  string
}

// Assign chooses the version(s) for a request. It is deterministic in its
// inputs and the lab's current canary and bandit state: users stick to A/B
// arms and canary groups by hash; bandit and interleaving draws hash the
// request ID.
func (l *Lab) Assign(domain string, d Domain, userID, requestID string) Assignment {
	a := Assignment{Strategy: Production, Version: d.Production, Group: string(Production), Propensity: 1}
	e := d.Exp
	if e == nil {
		return a
	}
	a.Experiment = e.ID()
	if s := e.Shadow; s != nil {
		f := s.Fraction
		if f == 0 {
			f = 1
		}
		if assign.Hash01(domain, "shadow", requestID) < f {
			a.Shadow = s.Versions
		}
	}
	switch {
	case e.Canary != nil:
		c := e.Canary
		st := l.canaryState(domain, c)
		share := st.share(c)
		switch {
		case st.State == CanaryRolledBack:
			a.Group = "control"
		case slices.Contains(c.InternalUsers, userID):
			a.Strategy, a.Version, a.Group = Canary, c.Version, "canary"
		case assign.InCanary(domain, c.Version, share, nil, userID):
			a.Strategy, a.Version, a.Group, a.Propensity = Canary, c.Version, "canary", share/100
		default:
			a.Group, a.Propensity = "control", 1-share/100
		}
	case e.AB != nil:
		var total float64
		arms := make([]assign.Arm, len(e.AB.Arms))
		for i, arm := range e.AB.Arms {
			total += arm.Weight
			arms[i] = assign.Arm{Version: arm.Version, Weight: arm.Weight}
		}
		arm := arms[assign.AB(domain, e.AB.Salt, arms, userID)]
		a.Strategy, a.Version, a.Group, a.Propensity = AB, arm.Version, arm.Version, arm.Weight/total
	case e.Bandit != nil:
		probs := l.banditAllocation(domain, e)
		u := assign.Hash01(domain, "bandit", requestID)
		for i, v := range e.Bandit.Versions {
			if u < probs[i] || i == len(e.Bandit.Versions)-1 {
				a.Strategy, a.Version, a.Group, a.Propensity, a.bandit = Bandit, v, v, probs[i], e.Bandit
				break
			}
			u -= probs[i]
		}
	case e.Interleave != nil:
		in := e.Interleave
		if assign.Hash01(domain, "interleave", requestID) < in.Fraction {
			teams := in.Teams()
			a.Strategy, a.Version, a.Other, a.Teams, a.Group, a.Propensity = Interleaved, teams[0], teams[1], teams, InterleavedGroup, in.Fraction
		} else {
			a.Propensity = 1 - in.Fraction
		}
	}
	if a.Version != d.Production && !d.Healthy(a.Version) {
		a.Fallback = fmt.Sprintf("version %q has no healthy instance", a.Version)
	} else {
		for _, v := range a.Teams {
			if !d.Healthy(v) {
				a.Fallback = fmt.Sprintf("version %q has no healthy instance", v)
				break
			}
		}
	}
	if a.Fallback != "" {
		a.Strategy, a.Version, a.Other, a.Teams, a.Group = Production, d.Production, "", nil, "fallback"
	}
	// Production's own requests only: not a canary's control group, whose
	// outcomes the canary is judged against.
	if x := e.Explore; x != nil && a.Strategy == Production && a.Group == string(Production) && assign.Hash01(domain, "explore", requestID) < x.Share {
		a.explore, a.domain = x, domain
	}
	return a
}

// Explore says whether production's answer to this request is logged for
// off-policy evaluation and, when it is, which of n candidates goes to the
// first slot (-1: production's own first) and epsilon, the chance that the
// first slot was drawn uniformly from the n (see experiment.Explore).
func (a *Assignment) Explore(requestID string, n int) (pick int, epsilon float64, logged bool) {
	if a.explore == nil || n == 0 || a.Strategy != Production {
		return -1, 0, false
	}
	eps := a.explore.EpsilonOrDefault()
	if assign.Hash01(a.domain, "explore-coin", requestID) < eps {
		return min(int(assign.Hash01(a.domain, "explore-pick", requestID)*float64(n)), n-1), eps, true
	}
	return -1, eps, true
}
