package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
)

func TestAUC(t *testing.T) {
	tests := []struct {
		name   string
		scores []float64
		ys     []float64
		want   float64
	}{
		{"perfect", []float64{0.1, 0.2, 0.8, 0.9}, []float64{0, 0, 1, 1}, 1},
		{"reversed", []float64{0.9, 0.8, 0.2, 0.1}, []float64{0, 0, 1, 1}, 0},
		{"all tied", []float64{0.5, 0.5, 0.5, 0.5}, []float64{0, 1, 0, 1}, 0.5},
		// Pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.9) loss, (0.4, 0.1) win, (0.4, 0.9) loss -> 2/4.
		{"mixed", []float64{0.1, 0.8, 0.9, 0.4}, []float64{0, 1, 0, 1}, 0.5},
		// (0.7, 0.3) win, (0.7, 0.7) tie -> 1.5/2.
		{"one tie", []float64{0.3, 0.7, 0.7}, []float64{0, 1, 0}, 0.75},
	}
	for _, tt := range tests {
		if got := AUC(tt.scores, tt.ys); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("%s: AUC %v, want %v", tt.name, got, tt.want)
		}
	}
	if !math.IsNaN(AUC([]float64{1, 2}, []float64{1, 1})) {
		t.Error("AUC with one class is not NaN")
	}
}

// LogReg recovers known coefficients from data simulated from them.
func TestLogRegRecoversCoefficients(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 100000
	xs := make([][]float64, n)
	ys := make([]float64, n)
	for i := range n {
		a, b := rng.NormFloat64(), rng.NormFloat64()
		xs[i] = []float64{a, b}
		if rng.Float64() < 1/(1+math.Exp(-(-1+0.8*a-0.5*b))) {
			ys[i] = 1
		}
	}
	m, err := LogReg([]string{"a", "b"}, xs, ys, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Standard errors at n=1e5 are about 0.01; allow 5 of them.
	for i, want := range []float64{0.8, -0.5} {
		if math.Abs(m.Weights[i]-want) > 0.05 {
			t.Errorf("weight %d: %v, want %v", i, m.Weights[i], want)
		}
	}
	if math.Abs(m.Intercept+1) > 0.05 {
		t.Errorf("intercept %v, want -1", m.Intercept)
	}
}

// The committed demo models beat a constant model on a fresh held-out log,
// and feed v2 (all features) beats feed v1 (popularity only).
func TestDemoModelsBeatConstant(t *testing.T) {
	w, err := world.New(world.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	auc := map[string]float64{}
	for _, name := range []string{"feed/v1", "feed/v2", "stories/v1"} {
		f, err := model.Load("../../models/" + name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		domain := name[:len(name)-3]
		log, err := w.SampleLog(world.LogOptions{Domain: domain, N: 40000, Seed: 12345, ColdUserShare: 0.1, ColdAdShare: 0.05})
		if err != nil {
			t.Fatal(err)
		}
		xs, ys := Matrix(log, f.Features())
		scores := make([]float64, len(xs))
		for i, x := range xs {
			scores[i] = f.Predict(x)
		}
		auc[name] = AUC(scores, ys)
		// At 40,000 rows and ~6% CTR the AUC's standard error is about 0.005.
		if auc[name] < 0.65 {
			t.Errorf("%s: held-out AUC %.4f, want > 0.65 (a constant model scores 0.5)", name, auc[name])
		}
	}
	if auc["feed/v2"] < auc["feed/v1"]+0.01 {
		t.Errorf("feed v2 AUC %.4f is not clearly above v1 %.4f", auc["feed/v2"], auc["feed/v1"])
	}
	t.Logf("held-out AUC: %v", auc)
}
