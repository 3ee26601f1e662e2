package lab

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
	var out []Pick
	used := map[string]bool{}
	ia, ib := 0, 0
	next := func(list []Ranked, i *int) (Ranked, bool) {
		for *i < len(list) {
			r := list[*i]
			*i++
			if !used[r.AdID] {
				return r, true
			}
		}
		return Ranked{}, false
	}
	for round := 0; len(out) < n; round++ {
		order := [2]int{0, 1}
		if coin(round) {
			order = [2]int{1, 0}
		}
		picked := false
		for _, team := range order {
			if len(out) == n {
				break
			}
			list, i := a, &ia
			if team == 1 {
				list, i = b, &ib
			}
			if r, ok := next(list, i); ok {
				used[r.AdID] = true
				out = append(out, Pick{Ranked: r, Team: team})
				picked = true
			}
		}
		if !picked {
			break
		}
	}
	return out
}
