// Package model loads ranking model files and scores feature vectors. It has
// no service dependencies: the ranker, offline scoring and later batch,
// streaming and edge deployments share it.
package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
)

// Model scores one feature vector. x has one entry per name in Features();
// NaN marks a missing value. Implementations are immutable and safe for
// concurrent use.
type Model interface {
	Format() string
	Features() []string
	Predict(x []float64) float64
}

// BatchModel is a Model that scores many vectors faster together.
type BatchModel interface {
	Model
	PredictBatch(xs [][]float64, out []float64)
}

// File is a loaded model file.
type File struct {
	Model
	Path   string
	SHA256 string // hex sha256 of the file's bytes
}

// ErrUnsupported is returned for a file whose format is not recognised.
var ErrUnsupported = errors.New("unsupported model format")

// Load reads, detects, parses and validates a model file. A feature spec
// file beside it (see SpecPath) supplies the feature names of a model file
// that has none, and must agree with one that has them.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	names, err := ReadSpec(SpecPath(path))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	m, err := parse(data, names)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	sum := sha256.Sum256(data)
	return &File{Model: m, Path: path, SHA256: hex.EncodeToString(sum[:])}, nil
}

// Parse detects the format of data and parses it.
func Parse(data []byte) (Model, error) { return parse(data, nil) }

// ParseWithSpec parses data with the feature names of its spec file (see
// Load), for a model read from somewhere other than a file.
func ParseWithSpec(data []byte, names []string) (Model, error) { return parse(data, names) }

func parse(data []byte, names []string) (Model, error) {
	if isXGBoost(data) {
		return ParseXGBoost(data, names)
	}
	var probe struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: not a JSON model file: %v", ErrUnsupported, err)
	}
	switch probe.Format {
	case FormatLogReg:
		m, err := parseLogReg(data)
		if err == nil && names != nil && !slices.Equal(names, m.Names) {
			return nil, errors.New("logreg: the spec file's feature names differ from the model's")
		}
		return m, err
	case "":
		return nil, fmt.Errorf("%w: neither an XGBoost model (no \"learner\") nor an adrank model (no \"format\")", ErrUnsupported)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupported, probe.Format)
	}
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func checkNames(names []string) error {
	if len(names) == 0 {
		return errors.New("model declares no features")
	}
	seen := make(map[string]bool, len(names))
	for i, n := range names {
		if n == "" {
			return fmt.Errorf("feature %d has an empty name", i)
		}
		if seen[n] {
			return fmt.Errorf("feature %q is declared twice", n)
		}
		seen[n] = true
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
