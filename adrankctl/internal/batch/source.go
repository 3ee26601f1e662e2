package batch

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"

	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/snapshot"
)

// pair is one (user, ad) to score.
type pair struct {
	row  int64 // input line (CSV) or row (Parquet), 1-based; 0 for the world
	user *world.User
	ad   *world.Ad
	over []override // feature values given by the input file
}

// override is a feature value from the input: model input col, value (NaN:
// missing).
type override struct {
	col int
	v   float64
}

// BadRow is one rejected input row.
type BadRow struct {
	Row    int64  `json:"row"` // line (CSV, header = 1) or row (Parquet, first = 1)
	Reason string `json:"reason"`
}

// chunk is a source's unit of work: the pairs of this shard in the next
// stretch of input, the rows rejected while reading it, and the position
// to resume from after it.
type chunk struct {
	seq   int64
	pairs []pair
	bad   []BadRow
	start int64
	end   int64
}

// source reads a shard's pairs from a position.
type source interface {
	// next reads the next chunk of about n pairs; io.EOF at the end.
	next(n int) (chunk, error)
	// total is the input's end position, for progress; unit names its unit.
	total() int64
	unit() string
	close() error
}

// inShard filters users by hash range.
type inShard struct{ i, n int }

func (s inShard) has(user string) bool { return snapshot.ShardOf(user, s.n) == s.i }

// worldSource scores every (user, ad of the domain) pair of the world; a
// position is an index into the world's users.
type worldSource struct {
	users []*world.User
	ads   []*world.Ad
	shard inShard
	pos   int64
}

func newWorldSource(w *world.World, domain string, shard inShard, pos int64) (*worldSource, error) {
	ads := w.Ads(domain)
	if len(ads) == 0 {
		return nil, fmt.Errorf("the world has no ads in domain %q", domain)
	}
	return &worldSource{users: w.Users(), ads: ads, shard: shard, pos: pos}, nil
}

func (s *worldSource) total() int64 { return int64(len(s.users)) }
func (s *worldSource) unit() string { return "users" }
func (s *worldSource) close() error { return nil }

func (s *worldSource) next(n int) (chunk, error) {
	c := chunk{start: s.pos}
	for s.pos < int64(len(s.users)) && len(c.pairs) < n {
		u := s.users[s.pos]
		s.pos++
		if !s.shard.has(u.ID) {
			continue
		}
		for _, a := range s.ads {
			c.pairs = append(c.pairs, pair{user: u, ad: a})
		}
	}
	c.end = s.pos
	if c.end == c.start {
		return c, io.EOF
	}
	return c, nil
}

// columns maps an input file's header onto the model: the user and ad ID
// columns, and a model input for each feature column.
type columns struct {
	user, ad int
	feature  map[int]int // file column -> model input
	width    int
}

func mapColumns(header []string, inputs map[string]int) (columns, error) {
	c := columns{user: -1, ad: -1, feature: map[int]int{}, width: len(header)}
	for j, h := range header {
		h = strings.TrimSpace(h)
		switch h {
		case "user_id":
			c.user = j
		case "ad_id":
			c.ad = j
		default:
			i, ok := inputs[h]
			if !ok {
				return c, fmt.Errorf("column %q is neither user_id, ad_id nor one of the model's features %v", h, slices.Sorted(maps.Keys(inputs)))
			}
			c.feature[j] = i
		}
	}
	if c.user < 0 || c.ad < 0 {
		return c, fmt.Errorf("the header %v lacks user_id or ad_id", header)
	}
	return c, nil
}

// resolver turns a row's IDs into world entities, or a reason to reject it.
type resolver struct {
	w      *world.World
	domain string
	shard  inShard
}

// resolve returns the pair, whether it is this shard's, and why it is bad
// ("" if it is not).
func (r resolver) resolve(row int64, user, ad string) (pair, bool, string) {
	if user == "" {
		return pair{}, false, "empty user_id"
	}
	if !r.shard.has(user) {
		return pair{}, false, "" // another shard's, whatever else is wrong with it
	}
	u, ok := r.w.User(user)
	if !ok {
		return pair{}, false, fmt.Sprintf("unknown user %q", clip(user))
	}
	a, ok := r.w.Ad(ad)
	switch {
	case ad == "":
		return pair{}, false, "empty ad_id"
	case !ok:
		return pair{}, false, fmt.Sprintf("unknown ad %q", clip(ad))
	case a.Domain != r.domain:
		return pair{}, false, fmt.Sprintf("ad %q is in domain %q, not %q", ad, a.Domain, r.domain)
	}
	return pair{row: row, user: u, ad: a}, true, ""
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// parseValue reads a feature cell: empty or NaN is missing.
func parseValue(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "nan") {
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a finite number", clip(s))
	}
	return v, nil
}

// csvSource reads (user_id, ad_id[, features...]) records; a position is
// the number of records (or malformed lines) read after the header.
type csvSource struct {
	f     *os.File
	r     *csv.Reader
	cols  columns
	res   resolver
	pos   int64
	lines int64
}

func newCSVSource(path string, res resolver, inputs map[string]int, pos int64) (*csvSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	lines, err := countLines(f)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	r := csv.NewReader(bufio.NewReaderSize(f, 1<<20))
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: reading the header: %w", path, err)
	}
	cols, err := mapColumns(header, inputs)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.FieldsPerRecord = cols.width
	s := &csvSource{f: f, r: r, cols: cols, res: res, lines: lines - 1}
	for s.pos < pos { // resume: skip what was committed
		if _, err := s.r.Read(); err == io.EOF {
			break
		}
		s.pos++
	}
	return s, nil
}

func countLines(f *os.File) (int64, error) {
	var n int64
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

func (s *csvSource) total() int64 { return max(s.lines, s.pos) }
func (s *csvSource) unit() string { return "rows" }
func (s *csvSource) close() error { return s.f.Close() }

func (s *csvSource) next(n int) (chunk, error) {
	c := chunk{start: s.pos}
	for len(c.pairs) < n {
		rec, err := s.r.Read()
		if err == io.EOF {
			break
		}
		s.pos++
		if pe := (*csv.ParseError)(nil); errors.As(err, &pe) {
			c.bad = append(c.bad, BadRow{Row: int64(pe.Line), Reason: "malformed line: " + pe.Err.Error()})
			continue
		}
		if err != nil {
			return c, err
		}
		line, _ := s.r.FieldPos(0)
		p, ok, why := s.res.resolve(int64(line), strings.TrimSpace(rec[s.cols.user]), strings.TrimSpace(rec[s.cols.ad]))
		if ok {
			for j, col := range s.cols.feature {
				v, err := parseValue(rec[j])
				if err != nil {
					ok, why = false, fmt.Sprintf("column %d: %v", j+1, err)
					break
				}
				p.over = append(p.over, override{col: col, v: v})
			}
		}
		switch {
		case ok:
			c.pairs = append(c.pairs, p)
		case why != "":
			c.bad = append(c.bad, BadRow{Row: int64(line), Reason: why})
		}
	}
	c.end = s.pos
	if c.end == c.start {
		return c, io.EOF
	}
	return c, nil
}

// parquetSource reads rows of a flat Parquet file with string columns
// user_id and ad_id and numeric feature columns; a position is a row index.
type parquetSource struct {
	f    *os.File
	r    *parquet.Reader
	cols columns
	res  resolver
	pos  int64
	rows []parquet.Row
}

func newParquetSource(path string, res resolver, inputs map[string]int, pos int64) (*parquetSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var header []string
	for _, p := range pf.Schema().Columns() {
		header = append(header, strings.Join(p, "."))
	}
	cols, err := mapColumns(header, inputs)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r := parquet.NewReader(pf)
	if err := r.SeekToRow(pos); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: seek to row %d: %w", path, pos, err)
	}
	return &parquetSource{f: f, r: r, cols: cols, res: res, pos: pos, rows: make([]parquet.Row, 1024)}, nil
}

func (s *parquetSource) total() int64 { return max(s.r.NumRows(), s.pos) }
func (s *parquetSource) unit() string { return "rows" }
func (s *parquetSource) close() error { s.r.Close(); return s.f.Close() }

func (s *parquetSource) next(n int) (chunk, error) {
	c := chunk{start: s.pos}
	for len(c.pairs) < n {
		k, err := s.r.ReadRows(s.rows[:min(len(s.rows), n-len(c.pairs))])
		for _, row := range s.rows[:k] {
			s.pos++
			if p, ok, why := s.pair(s.pos, row); ok {
				c.pairs = append(c.pairs, p)
			} else if why != "" {
				c.bad = append(c.bad, BadRow{Row: s.pos, Reason: why})
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return c, err
		}
	}
	c.end = s.pos
	if c.end == c.start {
		return c, io.EOF
	}
	return c, nil
}

func (s *parquetSource) pair(rowNum int64, row parquet.Row) (pair, bool, string) {
	var user, ad string
	for _, v := range row {
		switch v.Column() {
		case s.cols.user:
			user = v.String()
		case s.cols.ad:
			ad = v.String()
		}
		if v.IsNull() && (v.Column() == s.cols.user || v.Column() == s.cols.ad) {
			user, ad = "", ""
		}
	}
	p, ok, why := s.res.resolve(rowNum, user, ad)
	if !ok {
		return p, false, why
	}
	for _, v := range row {
		col, isFeature := s.cols.feature[v.Column()]
		if !isFeature {
			continue
		}
		x := math.NaN()
		switch k := v.Kind(); {
		case v.IsNull():
		case k == parquet.Double:
			x = v.Double()
		case k == parquet.Float:
			x = float64(v.Float())
		case k == parquet.Int32:
			x = float64(v.Int32())
		case k == parquet.Int64:
			x = float64(v.Int64())
		case k == parquet.Boolean:
			x = 0
			if v.Boolean() {
				x = 1
			}
		default:
			return p, false, fmt.Sprintf("column %d holds %v, not a number", v.Column()+1, k)
		}
		if math.IsInf(x, 0) {
			return p, false, fmt.Sprintf("column %d: %v is not finite", v.Column()+1, x)
		}
		p.over = append(p.over, override{col: col, v: x})
	}
	return p, true, ""
}
