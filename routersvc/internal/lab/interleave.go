package lab

import (
	"strconv"
	"strings"

	"github.com/adrank/adrank/platform/experiment"
)

// Ranked is one ad in a team's ranking.
type Ranked struct {
	AdID string
	Item any // the caller's payload (e.g. the priced allocation)
}

// Pick is one interleaved slot.
type Pick struct {
	Ranked
	Team int // 0: A, 1: B
}

// TeamDraft merges two rankings into n slots by team-draft interleaving
// (Radlinski et al., 2008): in each round a coin decides which team picks
// first; each team then adds its highest-ranked ad not yet shown. Credit
// for a click goes to the team that picked the ad. coin(round) gives the
// round's coin, so the merge is reproducible.
func TeamDraft(a, b []Ranked, n int, coin func(round int) bool) []Pick {
	return Multileave([][]Ranked{a, b}, n, func(round int) []int {
		if coin(round) {
			return []int{1, 0}
		}
		return []int{0, 1}
	})
}

// Multileave merges several rankings into n slots by team-draft
// multileaving (Schuth et al., 2014): in each round order(round) gives the
// order in which the teams pick (a permutation of their indices, drawn at
// random by the caller), and each team adds its highest-ranked ad not yet
// shown. With fewer slots than teams, the teams picking first in the first
// round fill them.
func Multileave(lists [][]Ranked, n int, order func(round int) []int) []Pick {
	var out []Pick
	used := map[string]bool{}
	next := make([]int, len(lists))
	for round := 0; len(out) < n; round++ {
		picked := false
		for _, team := range order(round) {
			if len(out) == n {
				break
			}
			for next[team] < len(lists[team]) {
				r := lists[team][next[team]]
				next[team]++
				if !used[r.AdID] {
					used[r.AdID] = true
					out = append(out, Pick{Ranked: r, Team: team})
					picked = true
					break
				}
			}
		}
		if !picked {
			break
		}
	}
	return out
}

// teamGroup is the group of an interleaved impression of team i of k: "a"
// and "b" with two teams, "t0", "t1", ... with more.
func teamGroup(i, k int) string {
	if k == 2 {
		return string(rune('a' + i))
	}
	return "t" + strconv.Itoa(i)
}

// teamOf is the team index of an interleaved impression's group; false for
// AgreedGroup and anything else.
func teamOf(group string) (int, bool) {
	switch {
	case group == "a":
		return 0, true
	case group == "b":
		return 1, true
	case strings.HasPrefix(group, "t"):
		i, err := strconv.Atoi(group[1:])
		return i, err == nil && i >= 0 && i < experiment.MaxTeams
	}
	return 0, false
}

// teamsOf are the interleaved versions of an experiment ID
// ("interleave:v1,v2,v3").
func teamsOf(exp string) []string {
	rest, ok := strings.CutPrefix(exp, "interleave:")
	if !ok {
		return nil
	}
	return strings.Split(rest, ",")
}

// pairKey is the duel counter of teams i < j: the experiment's duel key for
// the first two (as with two teams), a key of the pair's own for others.
func pairKey(domain, exp string, i, j int) string {
	if i == 0 && j == 1 {
		return duelKey(domain, exp)
	}
	return duelKey(domain, exp) + "|" + strconv.Itoa(i) + "|" + strconv.Itoa(j)
}
