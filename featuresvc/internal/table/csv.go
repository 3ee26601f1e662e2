package table

import (
	"encoding/csv"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/adrank/adrank/ml/featurespec"
)

// ReadCSV reads an entity's rows from CSV with a header line of column
// names. An empty cell is missing. Row numbers count data lines from 1 (the
// header is not a row).
func ReadCSV(r io.Reader, e *featurespec.Entity, l Limits) (*Rows, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Errors{Total: 1, List: []RowError{{Field: "file", Msg: "empty: no header line"}}}
		}
		return nil, csvError(err)
	}
	b := newBuilder(e, l)
	names := make([]string, len(header))
	col := map[string]int{}
	for i, h := range header {
		names[i] = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		col[names[i]] = i
	}
	b.columns(names)
	if b.errs.Total > 0 {
		return b.result()
	}
	var rec []string
	get := func(name string) cell {
		i, ok := col[name]
		if !ok {
			return cell{}
		}
		return cell{present: true, isText: true, text: rec[i]}
	}
	for row := 1; ; row++ {
		rec, err = cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount) {
				b.errs.add(row, "file", "%d fields, the header has %d", len(rec), len(header))
				continue
			}
			b.errs.add(row, "file", "%v", err)
			return b.result() // the rest cannot be read reliably
		}
		b.add(row, get)
		if b.over {
			break
		}
	}
	return b.result()
}

func csvError(err error) error {
	return &Errors{Total: 1, List: []RowError{{Field: "file", Msg: err.Error()}}}
}

func parseNum(f *featurespec.Feature, s string) (float64, error) {
	if f.Type == featurespec.Bool {
		switch strings.ToLower(s) {
		case "true":
			return 1, nil
		case "false":
			return 0, nil
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, errors.New(strconv.Quote(truncate(s, 40)) + " is not a number")
	}
	return v, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func formatNum(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
