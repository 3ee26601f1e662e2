package stats

import (
	"math"
	"strings"
)

// Var is one per-user quantity an experiment group keeps sums of.
type Var int

// The per-user quantities. The Pre ones are the user's history in the
// domain when the group first saw them: outside the experiment's influence,
// so a covariate for variance reduction (CUPED).
const (
	Imps        Var = iota // impressions
	Clicks                 // clicks
	Revenue                // micros, the price of each clicked impression
	Conversions            // conversions
	PreImps                // impressions before the experiment
	PreClicks              // clicks before the experiment
	PreRevenue             // revenue before the experiment
	NumVars
)

// VarNames are the quantities' names in the stores.
var VarNames = [NumVars]string{"n", "c", "r", "v", "xn", "xc", "xr"}

// Unit is one user's values of every Var.
type Unit [NumVars]float64

// Sums are a group's sums over its users: of each Var, and of each product
// of two, so that every per-user variance and covariance, and from them the
// delta-method variance of any ratio of sums, can be computed exactly
// however the values arrive.
type Sums struct {
	Users float64
	S     Unit
	SS    [NumVars]Unit // symmetric: SS[i][j] = sum of x_i x_j
}

// Move replaces one user's values old with new in the sums; a new user
// (absent before) is counted.
func (s *Sums) Move(old, new Unit, newUser bool) {
	if newUser {
		s.Users++
	}
	for i := range NumVars {
		s.S[i] += new[i] - old[i]
		for j := range NumVars {
			s.SS[i][j] += new[i]*new[j] - old[i]*old[j]
		}
	}
}

// ProductName is the stores' name of the sum of x_i x_j: "n2" for a square,
// "nc" for impressions times clicks (the names earlier versions used).
func ProductName(i, j Var) string {
	if i > j {
		i, j = j, i
	}
	if i == j {
		return VarNames[i] + "2"
	}
	return VarNames[i] + VarNames[j]
}

// Fields are the sums by their stores' names ("users", each Var's name, and
// each product's; see ProductName).
func (s Sums) Fields() map[string]float64 {
	m := map[string]float64{"users": s.Users}
	for i := range NumVars {
		m[VarNames[i]] = s.S[i]
		for j := i; j < NumVars; j++ {
			m[ProductName(i, j)] = s.SS[i][j]
		}
	}
	return m
}

// SumsFromFields reads Fields back; names are matched without case, so the
// {"Users", "N", "C", "N2", "C2", "NC"} of earlier versions read as they
// were meant, and absent names are 0.
func SumsFromFields(m map[string]float64) Sums {
	low := make(map[string]float64, len(m))
	for k, v := range m {
		low[strings.ToLower(k)] = v
	}
	s := Sums{Users: low["users"]}
	for i := range NumVars {
		s.S[i] = low[VarNames[i]]
		for j := i; j < NumVars; j++ {
			s.SS[i][j] = low[ProductName(i, j)]
			s.SS[j][i] = s.SS[i][j]
		}
	}
	return s
}

// Ratio is the CTR part of the sums.
func (s Sums) Ratio() Ratio { return s.RatioOf(Clicks, Imps) }

// RatioOf is the ratio num / den as a Ratio (per-user sums of both).
func (s Sums) RatioOf(num, den Var) Ratio {
	return Ratio{Users: s.Users, N: s.S[den], C: s.S[num], N2: s.SS[den][den], C2: s.SS[num][num], NC: s.SS[num][den]}
}

// Cov is the sample covariance over users of x_i and x_j (NaN with fewer
// than two users).
func (s Sums) Cov(i, j Var) float64 {
	m := s.Users
	if m < 2 {
		return math.NaN()
	}
	return (s.SS[i][j] - s.S[i]*s.S[j]/m) / (m - 1)
}

// Metric is an estimate that is a function of a group's sums: a ratio of
// two sums (num / den, such as clicks per impression), or a mean per user
// (den = -1).
type Metric struct {
	Num, Den Var
}

// PerUser is a mean over users of v.
func PerUser(v Var) Metric { return Metric{Num: v, Den: -1} }

// Value is the metric's estimate from s; NaN when undefined.
func (m Metric) Value(s Sums) float64 {
	d := s.Users
	if m.Den >= 0 {
		d = s.S[m.Den]
	}
	if d == 0 {
		return math.NaN()
	}
	return s.S[m.Num] / d
}

// gradient is the metric's linearisation: per-user weights w with
// Value(users) - Value ~ mean over users of w . x, the delta method.
func (m Metric) gradient(s Sums) Unit {
	var w Unit
	if m.Den < 0 {
		w[m.Num] = 1
		return w
	}
	mu := s.S[m.Den] / s.Users
	if !(mu > 0) {
		return Unit{}
	}
	r := s.S[m.Num] / s.S[m.Den]
	w[m.Num] += 1 / mu
	w[m.Den] -= r / mu
	return w
}

// linCov is the covariance over users of a . x and b . x.
func (s Sums) linCov(a, b Unit) float64 {
	var c float64
	for i := range NumVars {
		if a[i] == 0 {
			continue
		}
		for j := range NumVars {
			if b[j] != 0 {
				c += a[i] * b[j] * s.Cov(i, j)
			}
		}
	}
	return c
}

// Estimate is a metric's value in one group and the variance of that value.
type Estimate struct {
	Value, Var float64
}

// Estimate is m's value in s with its delta-method variance, whose unit is
// the user (NaN with fewer than two users).
func (m Metric) Estimate(s Sums) Estimate {
	if s.Users < 2 {
		return Estimate{Value: m.Value(s), Var: math.NaN()}
	}
	g := m.gradient(s)
	return Estimate{Value: m.Value(s), Var: math.Max(s.linCov(g, g)/s.Users, 0)}
}

// CUPED is a metric adjusted by a covariate measured before the experiment
// (Deng et al. 2013, with the delta method for ratios): in each group,
// Y - theta X, with one theta for all groups, minimising the variance.
// Since X's expectation is the same in every group, differences of the
// adjusted values estimate the same differences as Y's, with less variance.
type CUPED struct {
	Metric, Covariate Metric
	Theta             float64
}

// NewCUPED estimates theta = Cov(Y, X) / Var(X) pooled over the groups'
// users; theta is 0 (no adjustment) when X does not vary.
func NewCUPED(metric, covariate Metric, groups ...Sums) CUPED {
	c := CUPED{Metric: metric, Covariate: covariate}
	var cov, v float64
	for _, s := range groups {
		if s.Users < 2 {
			continue
		}
		gy, gx := metric.gradient(s), covariate.gradient(s)
		if cxy, vx := s.linCov(gy, gx), s.linCov(gx, gx); !math.IsNaN(cxy) && !math.IsNaN(vx) {
			cov += (s.Users - 1) * cxy
			v += (s.Users - 1) * vx
		}
	}
	if v > 0 {
		c.Theta = cov / v
	}
	return c
}

// Estimate is the adjusted value Y - theta X in s (X's own level left in:
// only differences between groups are meant) and its variance.
func (c CUPED) Estimate(s Sums) Estimate {
	y := c.Metric.Value(s)
	x := c.Covariate.Value(s)
	if math.IsNaN(x) {
		x = 0
	}
	if s.Users < 2 {
		return Estimate{Value: y - c.Theta*x, Var: math.NaN()}
	}
	g := c.Metric.gradient(s)
	gx := c.Covariate.gradient(s)
	for i := range g {
		g[i] -= c.Theta * gx[i]
	}
	return Estimate{Value: y - c.Theta*x, Var: math.Max(s.linCov(g, g)/s.Users, 0)}
}

// Difference is treatment - control with its variance, for independent
// groups.
func Difference(control, treatment Estimate) Estimate {
	return Estimate{Value: treatment.Value - control.Value, Var: control.Var + treatment.Var}
}
