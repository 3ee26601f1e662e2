// Package table reads an entity's rows from a CSV or Parquet file and
// validates every cell against the feature spec. A file with any error
// yields no rows: the errors, each with its row number and field, instead.
package table

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/adrank/adrank/ml/featurespec"
)

// Rows are an entity's validated rows, columnar: Keys[i] is row i's key
// (composite keys joined by KeySep), Nums[i*len(Numeric)+j] its j-th numeric
// feature (NaN when missing and the policy allows it; the default already
// applied), Strs[i*len(Strings)+j] its j-th string feature ("" when missing).
type Rows struct {
	Entity  *featurespec.Entity
	Numeric []*featurespec.Feature
	Strings []*featurespec.Feature
	Keys    []string
	Nums    []float64
	Strs    []string
}

// KeySep joins the parts of a composite key.
const KeySep = "\x00"

// Len is the number of rows.
func (r *Rows) Len() int { return len(r.Keys) }

// Key joins a composite key's parts.
func Key(parts ...string) string { return strings.Join(parts, KeySep) }

// RowError is one invalid cell or row. Row counts data rows from 1.
type RowError struct {
	Row   int
	Field string
	Msg   string
}

func (e RowError) Error() string {
	if e.Row == 0 {
		return fmt.Sprintf("%s: %s", e.Field, e.Msg)
	}
	return fmt.Sprintf("row %d: %s: %s", e.Row, e.Field, e.Msg)
}

// MaxListed is how many errors an Errors keeps; Total counts them all.
const MaxListed = 20

// Errors are a file's errors: the first MaxListed, and how many in all.
type Errors struct {
	List  []RowError
	Total int
}

func (e *Errors) add(row int, field, format string, args ...any) {
	e.Total++
	if len(e.List) < MaxListed {
		e.List = append(e.List, RowError{Row: row, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
}

func (e *Errors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d errors", e.Total)
	if e.Total == 1 {
		b.Reset()
		b.WriteString("1 error")
	}
	for _, x := range e.List {
		b.WriteString("; ")
		b.WriteString(x.Error())
	}
	if e.Total > len(e.List) {
		fmt.Fprintf(&b, "; and %d more", e.Total-len(e.List))
	}
	return b.String()
}

// Limits bound what a file may hold.
type Limits struct {
	MaxRows int
	// MaxCells bounds rows x features: the memory a file takes once read
	// (a Parquet file of nulls is tiny on disk and not in memory).
	MaxCells int
}

// DefaultLimits are featuresvc's defaults: 200 million cells are 1.6 GB of
// numbers.
var DefaultLimits = Limits{MaxRows: 20_000_000, MaxCells: 200_000_000}

// cell is one value as a file holds it: absent (empty, null), a number, or
// text (a CSV cell, a Parquet string).
type cell struct {
	present bool
	isText  bool
	num     float64
	text    string
}

// builder validates rows cell by cell and keeps them if the file is valid.
type builder struct {
	rows   *Rows
	errs   Errors
	seen   map[string]int // key -> row, for duplicates
	keyBuf []string
	limits Limits
	n      int  // rows offered
	over   bool // past a limit
}

func newBuilder(e *featurespec.Entity, l Limits) *builder {
	return &builder{
		rows:   &Rows{Entity: e, Numeric: e.Numeric(), Strings: e.Strings()},
		seen:   map[string]int{},
		keyBuf: make([]string, len(e.Keys)),
		limits: l,
	}
}

// columns checks a file's column names: every key present, no column twice,
// none the spec does not know, and a feature whose policy rejects missing
// values present.
func (b *builder) columns(names []string) {
	e := b.rows.Entity
	seen := map[string]bool{}
	for _, n := range names {
		switch {
		case seen[n]:
			b.errs.add(0, n, "column appears twice")
		case !containsKey(e, n) && e.Feature(n) == nil:
			b.errs.add(0, n, "column is neither a key nor a feature of entity %s", e.Name)
		}
		seen[n] = true
	}
	for _, k := range e.Keys {
		if !seen[k] {
			b.errs.add(0, k, "key column missing")
		}
	}
	for _, f := range e.Features {
		if !seen[f.Name] && f.Missing == featurespec.MissingReject {
			b.errs.add(0, f.Name, "column missing, and the feature's missing policy is reject")
		}
	}
}

func containsKey(e *featurespec.Entity, n string) bool {
	for _, k := range e.Keys {
		if k == n {
			return true
		}
	}
	return false
}

// add validates one row; get returns the cell of a column by name (absent
// when the file lacks the column).
func (b *builder) add(row int, get func(name string) cell) {
	if b.n++; b.n > b.limits.MaxRows || (b.limits.MaxCells > 0 && b.n*len(b.rows.Entity.Features) > b.limits.MaxCells) {
		if !b.over {
			b.over = true
			b.errs.add(row, "file", "more than %d rows, or %d cells (rows x features)", b.limits.MaxRows, b.limits.MaxCells)
		}
		return
	}
	before := b.errs.Total
	e := b.rows.Entity
	for i, k := range e.Keys {
		c := get(k)
		switch {
		case !c.present || (c.isText && c.text == ""):
			b.errs.add(row, k, "key is empty")
		case !c.isText:
			b.keyBuf[i] = formatNum(c.num)
		default:
			b.keyBuf[i] = c.text
		}
		if err := CheckText(b.keyBuf[i], featurespec.MaxKeyBytes); err != nil && c.present {
			b.errs.add(row, k, "%v", err)
		}
	}
	key := strings.Clone(Key(b.keyBuf...)) // not a view of the file's line
	nums := make([]float64, len(b.rows.Numeric))
	for j, f := range b.rows.Numeric {
		v, err := numeric(f, get(f.Name))
		if err != nil {
			b.errs.add(row, f.Name, "%v", err)
		}
		nums[j] = v
	}
	strs := make([]string, len(b.rows.Strings))
	for j, f := range b.rows.Strings {
		c := get(f.Name)
		switch {
		case !c.present || (c.isText && c.text == ""):
			if f.Missing == featurespec.MissingReject {
				b.errs.add(row, f.Name, "missing, and the feature's missing policy is reject")
			}
		case !c.isText:
			b.errs.add(row, f.Name, "a number where a string is declared")
		default:
			if err := CheckText(c.text, featurespec.MaxStringBytes); err != nil {
				b.errs.add(row, f.Name, "%v", err)
			}
			strs[j] = strings.Clone(c.text)
		}
	}
	if first, ok := b.seen[key]; ok {
		b.errs.add(row, strings.Join(e.Keys, ","), "key %q already in row %d", strings.ReplaceAll(key, KeySep, ","), first)
	}
	if b.errs.Total > before {
		return
	}
	b.seen[key] = row
	b.rows.Keys = append(b.rows.Keys, key)
	b.rows.Nums = append(b.rows.Nums, nums...)
	b.rows.Strs = append(b.rows.Strs, strs...)
}

func (b *builder) result() (*Rows, error) {
	if b.errs.Total > 0 {
		return nil, &b.errs
	}
	return b.rows, nil
}

// Numeric validates one value of f and applies its missing policy: the value
// to serve, or the error naming what is wrong.
func Numeric(f *featurespec.Feature, present bool, v float64) (float64, error) {
	return numeric(f, cell{present: present, num: v})
}

func numeric(f *featurespec.Feature, c cell) (float64, error) {
	if c.present && c.isText {
		s := strings.TrimSpace(c.text)
		if s == "" {
			c.present = false
		} else {
			v, err := parseNum(f, s)
			if err != nil {
				return math.NaN(), err
			}
			c.num = v
		}
	}
	if c.present && math.IsNaN(c.num) {
		if f.Missing != featurespec.MissingNaN {
			return math.NaN(), errors.New("NaN, and the feature's missing policy forbids it")
		}
		c.present = false
	}
	if !c.present {
		switch f.Missing {
		case featurespec.MissingDefault:
			return *f.Default, nil
		case featurespec.MissingReject:
			return math.NaN(), errors.New("missing, and the feature's missing policy is reject")
		}
		return math.NaN(), nil
	}
	if err := f.Check(c.num); err != nil {
		return math.NaN(), err
	}
	return c.num, nil
}

// CheckText refuses text over max bytes, invalid UTF-8 and NUL (which
// joins composite keys).
func CheckText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%d bytes, at most %d", len(s), max)
	}
	if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
		return errors.New("not valid UTF-8 text")
	}
	return nil
}
