package assign

import (
	"fmt"
	"math"
	"testing"
)

// The functions are a protocol between the router and the edge clients in
// the field: a change would reassign users and rename impressions, so their
// values are pinned.
func TestPinned(t *testing.T) {
	const pinnedImpression, pinnedHash = "256248161ddefbb05c86cc74842dcabf", 0.0763713469918369
	if got := ImpressionID("feed", "u1", "r1", "ad2", 1); got != pinnedImpression {
		t.Fatalf("ImpressionID(r1, ad2, 1) = %s, was %s", got, pinnedImpression)
	}
	if got := Hash01("feed", "ab", "salt", "u42"); got != pinnedHash {
		t.Fatalf("Hash01 = %v, was %v", got, pinnedHash)
	}
}

func TestABFollowsTheWeights(t *testing.T) {
	arms := []Arm{{"v1", 1}, {"v2", 3}}
	const n = 40000
	counts := make([]int, len(arms))
	for i := range n {
		u := fmt.Sprintf("u%d", i)
		a := AB("feed", "s", arms, u)
		if AB("feed", "s", arms, u) != a {
			t.Fatal("not sticky")
		}
		counts[a]++
	}
	// v2's share is Binomial(40000, 0.75)/40000: sd 0.0022; 5 sd is 0.011.
	if share := float64(counts[1]) / n; math.Abs(share-0.75) > 0.011 {
		t.Fatalf("v2 got %.4f of users, want 0.75", share)
	}
	// Another salt reshuffles users.
	moved := 0
	for i := range 1000 {
		u := fmt.Sprintf("u%d", i)
		if AB("feed", "s", arms, u) != AB("feed", "other", arms, u) {
			moved++
		}
	}
	if moved < 250 { // independent draws move 2*0.25*0.75 = 37.5% of users
		t.Fatalf("a new salt moved %d of 1000 users", moved)
	}
}

func TestInCanary(t *testing.T) {
	if !InCanary("feed", "v2", 0, []string{"alice"}, "alice") {
		t.Fatal("an internal user is not in the canary")
	}
	in := 0
	for i := range 10000 {
		if InCanary("feed", "v2", 5, nil, fmt.Sprintf("u%d", i)) {
			in++
		}
	}
	if in < 400 || in > 600 { // Binomial(10000, 0.05): sd 22
		t.Fatalf("%d of 10000 users in a 5%% canary", in)
	}
}
