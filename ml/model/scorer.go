package model

import "math"

// Scorer builds each candidate's feature vector by name and scores it.
type Scorer struct {
	m     Model
	names []string
	index map[string]int
}

// NewScorer wraps m.
func NewScorer(m Model) *Scorer {
	names := m.Features()
	index := make(map[string]int, len(names))
	for i, n := range names {
		index[n] = i
	}
	return &Scorer{m: m, names: names, index: index}
}

// Score returns one score per candidate map, in order. A feature is looked up
// in the candidate's map first, then in shared; absent from both, it is
// missing (NaN), never zero. Either map may be nil.
func (s *Scorer) Score(shared map[string]float64, candidates []map[string]float64) []float64 {
	k := len(s.names)
	// The shared features are looked up once per batch.
	base := make([]float64, k)
	for i, n := range s.names {
		if v, ok := shared[n]; ok {
			base[i] = v
		} else {
			base[i] = math.NaN()
		}
	}
	flat := make([]float64, len(candidates)*k)
	xs := make([][]float64, len(candidates))
	for c, own := range candidates {
		x := flat[c*k : (c+1)*k : (c+1)*k]
		copy(x, base)
		if len(own) < k {
			// Few own features (the usual case): walk them.
			for n, v := range own {
				if i, ok := s.index[n]; ok {
					x[i] = v
				}
			}
		} else {
			for i, n := range s.names {
				if v, ok := own[n]; ok {
					x[i] = v
				}
			}
		}
		xs[c] = x
	}
	out := make([]float64, len(candidates))
	if bm, ok := s.m.(BatchModel); ok {
		bm.PredictBatch(xs, out)
		return out
	}
	for c, x := range xs {
		out[c] = s.m.Predict(x)
	}
	return out
}
