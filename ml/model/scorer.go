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
	base := s.missing()
	for i, n := range s.names {
		if v, ok := shared[n]; ok {
			base[i] = v
		}
	}
	xs := s.rows(base, len(candidates))
	for c, own := range candidates {
		x := xs[c]
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
	}
	return s.predict(xs)
}

// Table is a dense feature table: one row per item, one column per name,
// row-major, NaN for a missing value (see adrank.features.v1.FeatureTable).
// The caller has checked that len(Values) == Rows*len(Names).
type Table struct {
	Names  []string
	Values []float64
	Rows   int
}

// ScoreTable returns one score per row of candidates. A model input comes
// from the candidate's row, or when that is missing (NaN or no such column)
// from shared's first row; found in neither, it is missing. Columns the model
// does not use are ignored. The names are resolved once per call, so the
// per-candidate work is a copy and a few stores.
func (s *Scorer) ScoreTable(shared, candidates Table) []float64 {
	base := s.missing()
	if shared.Rows > 0 {
		for j, n := range shared.Names {
			if i, ok := s.index[n]; ok {
				base[i] = shared.Values[j]
			}
		}
	}
	// cols[j] is the model input of candidate column j, or -1.
	cols := make([]int, len(candidates.Names))
	for j, n := range candidates.Names {
		cols[j] = -1
		if i, ok := s.index[n]; ok {
			cols[j] = i
		}
	}
	xs := s.rows(base, candidates.Rows)
	w := len(cols)
	for r, x := range xs {
		row := candidates.Values[r*w : (r+1)*w]
		for j, i := range cols {
			if i >= 0 && !math.IsNaN(row[j]) {
				x[i] = row[j]
			}
		}
	}
	return s.predict(xs)
}

// missing is a vector of the model's inputs, every one missing.
func (s *Scorer) missing() []float64 {
	v := make([]float64, len(s.names))
	for i := range v {
		v[i] = math.NaN()
	}
	return v
}

// rows returns n vectors, each a copy of base, in one allocation.
func (s *Scorer) rows(base []float64, n int) [][]float64 {
	k := len(base)
	flat := make([]float64, n*k)
	xs := make([][]float64, n)
	for c := range xs {
		x := flat[c*k : (c+1)*k : (c+1)*k]
		copy(x, base)
		xs[c] = x
	}
	return xs
}

func (s *Scorer) predict(xs [][]float64) []float64 {
	out := make([]float64, len(xs))
	if bm, ok := s.m.(BatchModel); ok {
		bm.PredictBatch(xs, out)
		return out
	}
	for c, x := range xs {
		out[c] = s.m.Predict(x)
	}
	return out
}
