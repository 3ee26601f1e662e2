package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
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
	depths []int32 // each tree's depth (edges from root to deepest leaf)
	margin float64 // logit(base_score)
}

// node is a split or a leaf, in 16 bytes. feature holds the feature index
// in its low 31 bits and, in the top bit, whether a missing value goes left.
// kids holds the right and left children as absolute indices into nodes. A
// leaf is its own two children (so walking on from it stays there) and keeps
// its value in split.
type node struct {
	feature uint32
	split   float32
	kids    [2]int32 // [0] right, [1] left
}

const defaultLeftBit = 1 << 31

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
		if !slices.Equal(l.FeatureNames, names) {
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
	// The sum of the leaves is taken in float32, as XGBoost does: a model
	// whose largest leaves could sum past float32's range would load and
	// then answer NaN. It is refused here instead.
	reach := math.Abs(m.margin)
	for t, tr := range trees {
		largest, err := m.addTree(tr, len(names))
		if err != nil {
			return nil, fmt.Errorf("xgboost: tree %d: %w", t, err)
		}
		reach += largest
	}
	if reach > maxMargin {
		return nil, fmt.Errorf("xgboost: the leaves can sum to %g, beyond %g: the scores would overflow", reach, float64(maxMargin))
	}
	return m, nil
}

// maxMargin bounds the sum of a model's largest leaves, far inside
// float32's range (3.4e38).
const maxMargin = 1e30

// addTree adds a tree and returns its largest leaf's magnitude.
func (m *XGBoost) addTree(tr xgbTree, numFeatures int) (float64, error) {
	n := len(tr.LeftChildren)
	if n == 0 {
		return 0, errors.New("no nodes")
	}
	if len(tr.RightChildren) != n || len(tr.SplitIndices) != n || len(tr.SplitConditions) != n || len(tr.DefaultLeft) != n {
		return 0, errors.New("node arrays differ in length")
	}
	var largest float64
	base := int32(len(m.nodes))
	m.roots = append(m.roots, base)
	depth := make([]int32, n)
	var maxDepth int32
	for i := range n {
		left, right := tr.LeftChildren[i], tr.RightChildren[i]
		c := tr.SplitConditions[i]
		if math.IsNaN(c) || math.IsInf(c, 0) {
			return 0, fmt.Errorf("node %d: split condition %v", i, c)
		}
		if left == -1 {
			if right != -1 {
				return 0, fmt.Errorf("node %d: one child only", i)
			}
			if math.Abs(c) > maxMargin {
				return 0, fmt.Errorf("node %d: leaf value %g is beyond %g", i, c, float64(maxMargin))
			}
			largest = math.Max(largest, math.Abs(c))
			self := base + int32(i)
			m.nodes = append(m.nodes, node{split: float32(c), kids: [2]int32{self, self}})
			continue
		}
		// XGBoost allocates children after their parent; requiring it also
		// rules out cycles.
		if left <= int32(i) || right <= int32(i) || left >= int32(n) || right >= int32(n) {
			return 0, fmt.Errorf("node %d: children %d and %d out of order or range", i, left, right)
		}
		if len(tr.SplitType) == n && tr.SplitType[i] != 0 {
			return 0, fmt.Errorf("node %d: categorical splits are not supported", i)
		}
		f := tr.SplitIndices[i]
		if f < 0 || int(f) >= numFeatures {
			return 0, fmt.Errorf("node %d: split on feature %d, outside the %d features", i, f, numFeatures)
		}
		feature := uint32(f)
		if tr.DefaultLeft[i] != 0 {
			feature |= defaultLeftBit
		}
		m.nodes = append(m.nodes, node{feature: feature, split: float32(c), kids: [2]int32{base + right, base + left}})
		depth[left], depth[right] = depth[i]+1, depth[i]+1
		maxDepth = max(maxDepth, depth[i]+1)
	}
	m.depths = append(m.depths, maxDepth)
	return largest, nil
}

// Format implements Model.
func (m *XGBoost) Format() string { return FormatXGBoost }

// Features implements Model.
func (m *XGBoost) Features() []string { return m.names }

// Trees is the number of trees.
func (m *XGBoost) Trees() int { return len(m.roots) }

// Predict implements Model.
func (m *XGBoost) Predict(x []float64) float64 {
	var out [1]float64
	m.PredictBatch([][]float64{x}, out[:])
	return out[0]
}

// PredictBatch implements BatchModel. Like XGBoost's CPU predictor, each
// row's sum starts from the base margin and adds the trees' leaves in
// float32, in tree order.
//
// A tree is walked for a block of rows in lock step, one level at a time
// across the rows, so the rows' walks are independent work the CPU overlaps
// instead of one chain of dependent loads. The child is picked without a
// branch: left when x < split, or when x is missing (NaN, for which every
// comparison is false) and the node's default is left. Leaves loop to
// themselves, so every row can take the tree's full depth.
func (m *XGBoost) PredictBatch(xs [][]float64, out []float64) {
	const block = 128
	var sums [block]float32
	var at [block]int32
	nodes := m.nodes
	k := len(m.names)
	x32 := make([]float32, block*k) // the block's rows in float32, as XGBoost compares them
	for lo := 0; lo < len(xs); lo += block {
		rows := xs[lo:min(lo+block, len(xs))]
		for r, x := range rows {
			sums[r] = float32(m.margin)
			for i, v := range x[:k] {
				x32[r*k+i] = float32(v)
			}
		}
		for t, root := range m.roots {
			for r := range rows {
				at[r] = root
			}
			for range m.depths[t] {
				for r := range rows {
					nd := &nodes[at[r]]
					v := x32[r*k+int(nd.feature&^defaultLeftBit)]
					left := b2i(v < nd.split) | (b2i(v != v) & int32(nd.feature>>31))
					at[r] = nd.kids[left&1]
				}
			}
			for r := range rows {
				sums[r] += nodes[at[r]].split
			}
		}
		for r := range rows {
			out[lo+r] = 1 / (1 + math.Exp(-float64(sums[r])))
		}
	}
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}
