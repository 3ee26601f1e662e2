// Package score scores JSON-lines feature rows with a model file, offline.
package score

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/adrank/adrank/ml/model"
)

// MaxLine is the longest input line accepted.
const MaxLine = 16 << 20

// Rows reads one JSON object per line (feature name to number; null or an
// absent key means missing) and writes one score per line, in input order.
// Keys the model does not use are ignored. The first bad line stops it with
// an error that names the line; the scores before it are already written.
func Rows(m model.Model, in io.Reader, out io.Writer) (int, error) {
	s := model.NewScorer(m)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	w := bufio.NewWriter(out)
	defer w.Flush()
	n := 0
	buf := make([]byte, 0, 32)
	for sc.Scan() {
		line := n + 1
		feats, err := parseRow(sc.Bytes())
		if err != nil {
			return n, fmt.Errorf("line %d: %w", line, err)
		}
		p := s.Score(nil, []map[string]float64{feats})[0]
		buf = strconv.AppendFloat(buf[:0], p, 'g', -1, 64)
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return n, err
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("line %d: %w", n+1, err)
	}
	return n, w.Flush()
}

func parseRow(b []byte) (map[string]float64, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("empty line: want a JSON object")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("want a JSON object of feature name to number: %w", err)
	}
	feats := make(map[string]float64, len(raw))
	for k, v := range raw {
		if string(v) == "null" {
			continue
		}
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			return nil, fmt.Errorf("feature %q: want a number or null, got %s", k, v)
		}
		feats[k] = f
	}
	return feats, nil
}
