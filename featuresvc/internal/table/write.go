package table

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/parquet-go/parquet-go"

	"github.com/adrank/adrank/ml/featurespec"
)

// WriteParquet writes rows as a Parquet file that ReadParquet reads back to
// the same rows: keys as strings, int and bool features as int64, floats as
// double, each feature optional (null when missing).
func WriteParquet(w io.Writer, rows *Rows) error {
	e := rows.Entity
	group := parquet.Group{}
	for _, k := range e.Keys {
		group[k] = parquet.String()
	}
	for _, f := range rows.Numeric {
		t := parquet.Leaf(parquet.DoubleType)
		if f.Type == featurespec.Int || f.Type == featurespec.Bool {
			t = parquet.Int(64)
		}
		group[f.Name] = parquet.Optional(t)
	}
	for _, f := range rows.Strings {
		group[f.Name] = parquet.Optional(parquet.String())
	}
	schema := parquet.NewSchema(e.Name, group)
	index := func(name string) int {
		leaf, ok := schema.Lookup(name)
		if !ok {
			panic("table: column " + name + " not in its own schema")
		}
		return leaf.ColumnIndex
	}
	keyCol := make([]int, len(e.Keys))
	for i, k := range e.Keys {
		keyCol[i] = index(k)
	}
	numCol := make([]int, len(rows.Numeric))
	for i, f := range rows.Numeric {
		numCol[i] = index(f.Name)
	}
	strCol := make([]int, len(rows.Strings))
	for i, f := range rows.Strings {
		strCol[i] = index(f.Name)
	}
	pw := parquet.NewWriter(w, schema, parquet.Compression(&parquet.Zstd))
	nn, ns := len(rows.Numeric), len(rows.Strings)
	ncol := len(e.Keys) + nn + ns
	batch := make([]parquet.Row, 0, 1024)
	flush := func() error {
		if _, err := pw.WriteRows(batch); err != nil {
			return err
		}
		batch = batch[:0]
		return nil
	}
	for i, key := range rows.Keys {
		row := make(parquet.Row, ncol)
		parts := splitKey(key, len(e.Keys))
		for j, c := range keyCol {
			row[c] = parquet.ValueOf(parts[j]).Level(0, 0, c)
		}
		for j, c := range numCol {
			v := rows.Nums[i*nn+j]
			switch {
			case math.IsNaN(v):
				row[c] = parquet.Value{}.Level(0, 0, c)
			case rows.Numeric[j].Type == featurespec.Float:
				row[c] = parquet.ValueOf(v).Level(0, 1, c)
			default:
				row[c] = parquet.ValueOf(int64(v)).Level(0, 1, c)
			}
		}
		for j, c := range strCol {
			if v := rows.Strs[i*ns+j]; v != "" {
				row[c] = parquet.ValueOf(v).Level(0, 1, c)
			} else {
				row[c] = parquet.Value{}.Level(0, 0, c)
			}
		}
		batch = append(batch, row)
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := pw.Close(); err != nil {
		return fmt.Errorf("parquet: %w", err)
	}
	return nil
}

func splitKey(key string, n int) []string {
	out := make([]string, 0, n)
	for range n - 1 {
		i := strings.Index(key, KeySep)
		if i < 0 {
			break
		}
		out = append(out, key[:i])
		key = key[i+len(KeySep):]
	}
	return append(out, key)
}
