// Package train fits the demo logistic-regression models on sampled logs and
// measures them (AUC, log loss).
package train

import (
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mat"

	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
)

// Matrix turns impressions into rows over names, with NaN for missing values,
// and the click labels.
func Matrix(log []world.Impression, names []string) ([][]float64, []float64) {
	xs := make([][]float64, len(log))
	ys := make([]float64, len(log))
	for r, im := range log {
		x := make([]float64, len(names))
		for i, n := range names {
			if v, ok := im.Feature(n); ok {
				x[i] = v
			} else {
				x[i] = math.NaN()
			}
		}
		xs[r] = x
		if im.Clicked {
			ys[r] = 1
		}
	}
	return xs, ys
}

// LogReg fits an L2-regularised logistic regression by Newton's method.
// Missing values are imputed with the training mean of the feature, which the
// model stores and applies the same way at serving time.
func LogReg(names []string, xs [][]float64, ys []float64, l2 float64) (*model.LogReg, error) {
	k := len(names)
	impute := make([]float64, k)
	for i := range k {
		var s, n float64
		for _, x := range xs {
			if !math.IsNaN(x[i]) {
				s += x[i]
				n++
			}
		}
		if n > 0 {
			impute[i] = s / n
		}
	}
	// Design rows with the intercept in column 0.
	d := k + 1
	rows := make([][]float64, len(xs))
	for r, x := range xs {
		row := make([]float64, d)
		row[0] = 1
		for i, v := range x {
			if math.IsNaN(v) {
				v = impute[i]
			}
			row[i+1] = v
		}
		rows[r] = row
	}
	beta := make([]float64, d)
	for iter := 0; iter < 50; iter++ {
		grad := make([]float64, d)
		hess := mat.NewSymDense(d, nil)
		for r, row := range rows {
			p := sigmoid(dot(beta, row))
			g := p - ys[r]
			w := p * (1 - p)
			for i := range d {
				grad[i] += g * row[i]
				for j := i; j < d; j++ {
					hess.SetSym(i, j, hess.At(i, j)+w*row[i]*row[j])
				}
			}
		}
		for i := 1; i < d; i++ { // no penalty on the intercept
			grad[i] += l2 * beta[i]
			hess.SetSym(i, i, hess.At(i, i)+l2)
		}
		var chol mat.Cholesky
		if ok := chol.Factorize(hess); !ok {
			return nil, fmt.Errorf("hessian is not positive definite at iteration %d", iter)
		}
		step := mat.NewVecDense(d, nil)
		if err := chol.SolveVecTo(step, mat.NewVecDense(d, grad)); err != nil {
			return nil, fmt.Errorf("newton step: %w", err)
		}
		var moved float64
		for i := range d {
			beta[i] -= step.AtVec(i)
			moved = math.Max(moved, math.Abs(step.AtVec(i)))
		}
		if moved < 1e-9 {
			break
		}
	}
	return model.NewLogReg(slices.Clone(names), beta[1:], beta[0], impute)
}

// AUC is the area under the ROC curve (Mann-Whitney, ties counted half).
func AUC(scores, ys []float64) float64 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		switch {
		case scores[a] < scores[b]:
			return -1
		case scores[a] > scores[b]:
			return 1
		}
		return 0
	})
	var rankSum, pos float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		avg := float64(i+j+1) / 2 // 1-based mean rank of the tie group
		for k := i; k < j; k++ {
			if ys[idx[k]] == 1 {
				rankSum += avg
				pos++
			}
		}
		i = j
	}
	neg := float64(len(scores)) - pos
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

// LogLoss is the mean negative log-likelihood.
func LogLoss(scores, ys []float64) float64 {
	var s float64
	for i, p := range scores {
		p = math.Min(math.Max(p, 1e-15), 1-1e-15)
		if ys[i] == 1 {
			s -= math.Log(p)
		} else {
			s -= math.Log(1 - p)
		}
	}
	return s / float64(len(scores))
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}
