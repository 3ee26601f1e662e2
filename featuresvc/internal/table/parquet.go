package table

import (
	"errors"
	"fmt"
	"io"

	"github.com/parquet-go/parquet-go"

	"github.com/adrank/adrank/ml/featurespec"
)

// ReadParquet reads an entity's rows from a Parquet file whose top-level
// columns are named as the spec's keys and features. Numbers may be stored as
// double, float, int32, int64 or boolean; keys and string features as
// strings (or integers, for keys). A null is missing. Row numbers count from
// 1. A malformed file is an error, never a panic.
func ReadParquet(r io.ReaderAt, size int64, e *featurespec.Entity, l Limits) (rows *Rows, err error) {
	defer func() {
		if p := recover(); p != nil {
			rows, err = nil, fileError(fmt.Sprintf("not a readable Parquet file: %v", p))
		}
	}()
	f, err := parquet.OpenFile(r, size)
	if err != nil {
		return nil, fileError("not a readable Parquet file: " + err.Error())
	}
	b := newBuilder(e, l)
	var names []string
	col := map[string]int{}
	for _, field := range f.Schema().Fields() {
		names = append(names, field.Name())
		if !field.Leaf() || field.Repeated() {
			b.errs.add(0, field.Name(), "a nested or repeated column; want a plain value")
			continue
		}
		leaf, ok := f.Schema().Lookup(field.Name())
		if !ok {
			continue
		}
		col[field.Name()] = leaf.ColumnIndex
	}
	b.columns(names)
	if b.errs.Total > 0 {
		return b.result()
	}
	byIndex := make([]parquet.Value, len(names))
	present := make([]bool, len(names))
	get := func(name string) cell {
		i, ok := col[name]
		if !ok || !present[i] {
			return cell{}
		}
		v := byIndex[i]
		switch v.Kind() {
		case parquet.ByteArray, parquet.FixedLenByteArray:
			return cell{present: true, isText: true, text: string(v.ByteArray())}
		case parquet.Double:
			return cell{present: true, num: v.Double()}
		case parquet.Float:
			return cell{present: true, num: float64(v.Float())}
		case parquet.Int32:
			return cell{present: true, num: float64(v.Int32())}
		case parquet.Int64:
			return cell{present: true, num: float64(v.Int64())}
		case parquet.Boolean:
			if v.Boolean() {
				return cell{present: true, num: 1}
			}
			return cell{present: true, num: 0}
		}
		return cell{present: true, isText: true, text: "\x00"} // unusable: fails as text
	}
	pr := parquet.NewReader(f)
	defer pr.Close()
	buf := make([]parquet.Row, 256)
	row := 0
	for {
		n, err := pr.ReadRows(buf)
		for _, r := range buf[:n] {
			row++
			clear(present)
			for _, v := range r {
				if c := v.Column(); c >= 0 && c < len(byIndex) && !v.IsNull() {
					byIndex[c], present[c] = v, true
				}
			}
			b.add(row, get)
		}
		if errors.Is(err, io.EOF) || b.over {
			break
		}
		if err != nil {
			b.errs.add(row+1, "file", "%v", err)
			break
		}
	}
	return b.result()
}

func fileError(msg string) error {
	return &Errors{Total: 1, List: []RowError{{Field: "file", Msg: msg}}}
}
