package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/adrank/adrank/platform/experiment"
	"github.com/adrank/adrank/routersvc/internal/store"
)

// An arm is judged by its ads, not by the slots they happened to be shown
// in. Arm x only ever fills the first slot; arm y fills three, and its ads
// are better (a click rate of 0.105 where examined, against x's 0.08). Per
// impression y looks worse (0.105 x (1 + 0.7 + 0.49) / 3 = 0.077 < 0.08),
// and the bandit leans to x; weighted by the chance that each slot is
// examined, y is better by about 2.8 standard errors, and the bandit goes
// to it.
func TestBanditRewardsAreCorrectedForPosition(t *testing.T) {
	bolt, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	bias := []float64{1, 0.7, 0.49}
	docs := map[string]string{
		"raw":       `{"bandit": {"policy": "thompson", "versions": ["x", "y"]}}`,
		"corrected": `{"bandit": {"policy": "thompson", "versions": ["x", "y"], "positionBias": [1, 0.7, 0.49]}}`,
	}
	exps := map[string]*experiment.Experiment{}
	for name, doc := range docs {
		if exps[name], err = experiment.Parse([]byte(doc)); err != nil {
			t.Fatal(err)
		}
	}
	current := exps["corrected"]
	l := New(Options{Store: bolt, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Refresh: -1,
		Experiments: func() map[string]Domain { return map[string]Domain{"feed": {Production: "x", Exp: current}} }})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	var clicks []string
	for i := range 3000 {
		v, slots, q := "x", 1, 0.08
		if i%2 == 1 {
			v, slots, q = "y", 3, 0.105
		}
		s := Served{Domain: "feed", UserID: fmt.Sprint("u", i%500), RequestID: fmt.Sprint("r", i),
			A: Assignment{Strategy: Bandit, Version: v, Group: v, Propensity: 0.5, Experiment: current.ID(), bandit: current.Bandit}}
		for slot := 1; slot <= slots; slot++ {
			id := fmt.Sprintf("r%d-%d", i, slot)
			s.Results = append(s.Results, ServedResult{ImpressionID: id, Slot: slot, Price: 10, Version: v})
			if rng.Float64() < q*bias[slot-1] {
				clicks = append(clicks, id)
			}
		}
		l.Record(s)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range clicks {
		if res, err := l.Event(ctx, Event{ImpressionID: id}); err != nil || res != Accepted {
			t.Fatalf("click %s: %v %v", id, res, err)
		}
	}
	for _, name := range []string{"raw", "corrected"} {
		current = exps[name]
		l.Refresh(ctx)
		p := l.banditAllocation("feed", current)
		t.Logf("%s rewards: allocation x %.3f, y %.3f", name, p[0], p[1])
		if name == "raw" && p[1] >= 0.5 || name == "corrected" && p[1] < 0.95 {
			t.Errorf("%s rewards: allocation %v", name, p)
		}
	}
}
