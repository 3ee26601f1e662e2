package model

import "math"

// Scorer builds each candidate's feature vector by name and scores it.
type Scorer struct {
	m     Model
	names []string
}

// NewScorer wraps m.
func NewScorer(m Model) *Scorer { return &Scorer{m: m, names: m.Features()} }

// Score returns one score per candidate map, in order. A feature is looked up
// in the candidate's map first, then in shared; absent from both, it is
// missing (NaN), never zero. Either map may be nil.
func (s *Scorer) Score(shared map[string]float64, candidates []map[string]float64) []float64 {
	out := make([]float64, len(candidates))
	x := make([]float64, len(s.names))
	for c, own := range candidates {
		for i, n := range s.names {
			x[i] = lookup(own, shared, n)
		}
		out[c] = s.m.Predict(x)
	}
	return out
}

func lookup(own, shared map[string]float64, name string) float64 {
	if v, ok := own[name]; ok {
		return v
	}
	if v, ok := shared[name]; ok {
		return v
	}
	return math.NaN()
}
