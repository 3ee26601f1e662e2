package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// FormatXGBoost is the detected format of XGBoost JSON models.
const FormatXGBoost = "xgboost"

// XGBoost is a gradient-boosted tree ensemble as written by XGBoost 1.7's
// Booster.save_model("m.json"): booster gbtree, objective binary:logistic,
// numeric splits. It predicts exactly as XGBoost does: a feature is compared
// to its split in float32 (x < split goes left), a missing value (NaN) takes
// the node's default direction, and
//
//	p = sigmoid(logit(base_score) + sum of the trees' leaf values)
type XGBoost struct {
	names  []string
	nodes  []node  // every tree's nodes, flattened
	roots  []int32 // index of each tree's root in nodes
	margin float64 // logit(base_score)
}

// node is a split (feature >= 0) or a leaf (feature < 0, value).
type node struct {
	feature     int32
	left, right int32 // absolute indices into nodes
	split       float32
	defaultLeft bool
	value       float32
}

// xgbFile is the part of XGBoost's JSON model schema we read.
type xgbFile struct {
	Learner *struct {
		FeatureNames    []string `json:"feature_names"`
		GradientBooster struct {
			Name  string `json:"name"`
			Model struct {
				Trees    []xgbTree `json:"trees"`
				TreeInfo []int     `json:"tree_info"`
			} `json:"model"`
		} `json:"gradient_booster"`
		LearnerModelParam struct {
			BaseScore  string `json:"base_score"`
			NumClass   string `json:"num_class"`
			NumFeature string `json:"num_feature"`
			NumTarget  string `json:"num_target"`
		} `json:"learner_model_param"`
		Objective struct {
			Name string `json:"name"`
		} `json:"objective"`
	} `json:"learner"`
	Version []int `json:"version"`
}

type xgbTree struct {
	LeftChildren    []int32   `json:"left_children"`
	RightChildren   []int32   `json:"right_children"`
	SplitIndices    []int32   `json:"split_indices"`
	SplitConditions []float64 `json:"split_conditions"`
	DefaultLeft     []int     `json:"default_left"`
	SplitType       []int     `json:"split_type"`
}

// isXGBoost reports whether data looks like an XGBoost JSON model.
func isXGBoost(data []byte) bool {
	var probe struct {
		Learner json.RawMessage `json:"learner"`
	}
	return json.Unmarshal(data, &probe) == nil && len(probe.Learner) > 0
}

// SpecSuffix names the feature spec file that may sit beside a model whose
// file does not declare its feature names: m.json -> m.features.json,
// holding {"features": ["name", ...]} in the model's input order.
const SpecSuffix = ".features.json"

// SpecPath is the spec file path for a model path.
func SpecPath(modelPath string) string {
	return strings.TrimSuffix(modelPath, ".json") + SpecSuffix
}

// ReadSpec reads a feature spec file.
func ReadSpec(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var spec struct {
		Features []string `json:"features"`
	}
	if err := decodeStrict(data, &spec); err != nil {
		return nil, fmt.Errorf("feature spec %s: %w", path, err)
	}
	return spec.Features, nil
}

// ParseXGBoost parses an XGBoost JSON model. names, when not nil, are the
// feature names from a spec file; they must agree with the file's own names
// if it has them.
func ParseXGBoost(data []byte, names []string) (*XGBoost, error) {
	var f xgbFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("xgboost: %w", err)
	}
	l := f.Learner
	if l == nil {
		return nil, errors.New("xgboost: no learner")
	}
	if obj := l.Objective.Name; obj != "binary:logistic" {
		return nil, fmt.Errorf("xgboost: objective %q is not supported (want binary:logistic)", obj)
	}
	if b := l.GradientBooster.Name; b != "gbtree" {
		return nil, fmt.Errorf("xgboost: booster %q is not supported (want gbtree)", b)
	}
	if nc := l.LearnerModelParam.NumClass; nc != "" && nc != "0" && nc != "1" {
		return nil, fmt.Errorf("xgboost: num_class %s: only binary models are supported", nc)
	}
	if nt := l.LearnerModelParam.NumTarget; nt != "" && nt != "1" {
		return nil, fmt.Errorf("xgboost: num_target %s: only one target is supported", nt)
	}
	switch {
	case len(l.FeatureNames) > 0 && names != nil:
		if !equal(l.FeatureNames, names) {
			return nil, errors.New("xgboost: the spec file's feature names differ from the model's")
		}
	case len(l.FeatureNames) > 0:
		names = l.FeatureNames
	case names == nil:
		return nil, errors.New("xgboost: the model declares no feature_names and there is no feature spec file beside it")
	}
	if err := checkNames(names); err != nil {
		return nil, fmt.Errorf("xgboost: %w", err)
	}
	if nf := l.LearnerModelParam.NumFeature; nf != "" && nf != strconv.Itoa(len(names)) {
		return nil, fmt.Errorf("xgboost: num_feature %s but %d feature names", nf, len(names))
	}
	base, err := strconv.ParseFloat(l.LearnerModelParam.BaseScore, 64)
	if err != nil || !(base > 0 && base < 1) {
		return nil, fmt.Errorf("xgboost: base_score %q: want a probability in (0, 1)", l.LearnerModelParam.BaseScore)
	}
	trees := l.GradientBooster.Model.Trees
	if len(trees) == 0 {
		return nil, errors.New("xgboost: no trees")
	}
	for i, g := range l.GradientBooster.Model.TreeInfo {
		if g != 0 {
			return nil, fmt.Errorf("xgboost: tree %d belongs to output group %d: only one group is supported", i, g)
		}
	}
	m := &XGBoost{names: names, margin: math.Log(base / (1 - base))}
	for t, tr := range trees {
		if err := m.addTree(tr, len(names)); err != nil {
			return nil, fmt.Errorf("xgboost: tree %d: %w", t, err)
		}
	}
	return m, nil
}

func (m *XGBoost) addTree(tr xgbTree, numFeatures int) error {
	n := len(tr.LeftChildren)
	if n == 0 {
		return errors.New("no nodes")
	}
	if len(tr.RightChildren) != n || len(tr.SplitIndices) != n || len(tr.SplitConditions) != n || len(tr.DefaultLeft) != n {
		return errors.New("node arrays differ in length")
	}
	base := int32(len(m.nodes))
	m.roots = append(m.roots, base)
	for i := range n {
		left, right := tr.LeftChildren[i], tr.RightChildren[i]
		c := tr.SplitConditions[i]
		if math.IsNaN(c) || math.IsInf(c, 0) {
			return fmt.Errorf("node %d: split condition %v", i, c)
		}
		if left == -1 {
			if right != -1 {
				return fmt.Errorf("node %d: one child only", i)
			}
			m.nodes = append(m.nodes, node{feature: -1, value: float32(c)})
			continue
		}
		// XGBoost allocates children after their parent; requiring it also
		// rules out cycles.
		if left <= int32(i) || right <= int32(i) || left >= int32(n) || right >= int32(n) {
			return fmt.Errorf("node %d: children %d and %d out of order or range", i, left, right)
		}
		if len(tr.SplitType) == n && tr.SplitType[i] != 0 {
			return fmt.Errorf("node %d: categorical splits are not supported", i)
		}
		f := tr.SplitIndices[i]
		if f < 0 || int(f) >= numFeatures {
			return fmt.Errorf("node %d: split on feature %d, outside the %d features", i, f, numFeatures)
		}
		m.nodes = append(m.nodes, node{feature: f, left: base + left, right: base + right, split: float32(c), defaultLeft: tr.DefaultLeft[i] != 0})
	}
	return nil
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Format implements Model.
func (m *XGBoost) Format() string { return FormatXGBoost }

// Features implements Model.
func (m *XGBoost) Features() []string { return m.names }

// Trees is the number of trees.
func (m *XGBoost) Trees() int { return len(m.roots) }

// Predict implements Model.
func (m *XGBoost) Predict(x []float64) float64 {
	// Like XGBoost's CPU predictor: start from the base margin and add the
	// trees' leaves in float32, in tree order.
	nodes := m.nodes
	sum := float32(m.margin)
	for _, r := range m.roots {
		i := r
		for {
			nd := &nodes[i]
			if nd.feature < 0 {
				sum += nd.value
				break
			}
			v := x[nd.feature]
			switch {
			case v != v: // NaN: missing
				if nd.defaultLeft {
					i = nd.left
				} else {
					i = nd.right
				}
			case float32(v) < nd.split:
				i = nd.left
			default:
				i = nd.right
			}
		}
	}
	return 1 / (1 + math.Exp(-float64(sum)))
}
