package model

import (
	"fmt"
	"math"
)

// FormatLogReg is the "format" value of adrank's logistic-regression files.
const FormatLogReg = "logreg"

// LogReg is a logistic-regression model:
//
//	p = sigmoid(intercept + sum_i weights[i] * x[i])
//
// where a missing x[i] takes impute[i] (the training mean), so "missing" means
// "as for an average row", not zero.
//
// File format (JSON):
//
//	{"format": "logreg", "features": ["a", "b"], "weights": [0.5, -1],
//	 "intercept": -3.1, "impute": [0.2, 10], "metadata": {...}}
type LogReg struct {
	Kind      string            `json:"format"`
	Names     []string          `json:"features"`
	Weights   []float64         `json:"weights"`
	Intercept float64           `json:"intercept"`
	Impute    []float64         `json:"impute"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// NewLogReg builds a validated logistic-regression model.
func NewLogReg(names []string, weights []float64, intercept float64, impute []float64) (*LogReg, error) {
	m := &LogReg{Kind: FormatLogReg, Names: names, Weights: weights, Intercept: intercept, Impute: impute}
	return m, m.validate()
}

func parseLogReg(data []byte) (*LogReg, error) {
	var m LogReg
	if err := decodeStrict(data, &m); err != nil {
		return nil, fmt.Errorf("logreg: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("logreg: %w", err)
	}
	return &m, nil
}

func (m *LogReg) validate() error {
	if err := checkNames(m.Names); err != nil {
		return err
	}
	if len(m.Weights) != len(m.Names) {
		return fmt.Errorf("%d weights for %d features", len(m.Weights), len(m.Names))
	}
	if len(m.Impute) != len(m.Names) {
		return fmt.Errorf("%d impute values for %d features", len(m.Impute), len(m.Names))
	}
	if !finite(m.Intercept) {
		return fmt.Errorf("intercept is %v", m.Intercept)
	}
	for i := range m.Names {
		if !finite(m.Weights[i]) || !finite(m.Impute[i]) {
			return fmt.Errorf("feature %q has a non-finite weight or impute value", m.Names[i])
		}
	}
	return nil
}

// Format implements Model.
func (m *LogReg) Format() string { return FormatLogReg }

// Features implements Model.
func (m *LogReg) Features() []string { return m.Names }

// Predict implements Model.
func (m *LogReg) Predict(x []float64) float64 {
	z := m.Intercept
	for i, w := range m.Weights {
		v := x[i]
		if math.IsNaN(v) {
			v = m.Impute[i]
		}
		z += w * v
	}
	return 1 / (1 + math.Exp(-z))
}
