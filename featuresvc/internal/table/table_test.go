package table

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/adrank/adrank/ml/featurespec"
)

func userEntity(t *testing.T) *featurespec.Entity {
	t.Helper()
	s, err := featurespec.Parse([]byte(`{"entities": [
	  {"name": "user", "keys": ["user_id"], "features": [
	    {"name": "age", "type": "int", "min": 0, "max": 150, "missing": "reject"},
	    {"name": "ctr", "type": "float", "min": 0, "max": 1},
	    {"name": "vip", "type": "bool", "missing": "default", "default": 0},
	    {"name": "segment", "type": "string"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return s.Entity("user")
}

func TestReadCSV(t *testing.T) {
	e := userEntity(t)
	rows, err := ReadCSV(strings.NewReader("user_id,age,ctr,vip,segment\nu1,30,0.5,true,a\nu2,41,,,\n"), e, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if rows.Len() != 2 || rows.Nums[0] != 30 || rows.Nums[1] != 0.5 || rows.Nums[2] != 1 || rows.Strs[0] != "a" {
		t.Fatalf("row 1: %v %v", rows.Nums[:3], rows.Strs)
	}
	if !math.IsNaN(rows.Nums[4]) || rows.Nums[5] != 0 || rows.Strs[1] != "" {
		t.Errorf("row 2's missing values: ctr %v (want NaN), vip %v (want its default 0), segment %q", rows.Nums[4], rows.Nums[5], rows.Strs[1])
	}
}

// Each kind of bad cell is reported with its row and field, and a file with
// any error yields no rows.
func TestReadCSVErrorsNameRowAndField(t *testing.T) {
	e := userEntity(t)
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"unknown column", "user_id,age,cTR\nu1,3,0.1\n", []string{"cTR: column is neither a key nor a feature"}},
		{"missing key column", "age\n3\n", []string{"user_id: key column missing"}},
		{"rejected missing column", "user_id,ctr\nu1,0.1\n", []string{"age: column missing"}},
		{"out of bounds", "user_id,age,ctr\nu1,3,0.1\nu2,200,1.5\n", []string{"row 2: age: 200 above its maximum 150", "row 2: ctr: 1.5 above its maximum 1"}},
		{"not a number", "user_id,age\nu1,thirty\n", []string{`row 1: age: "thirty" is not a number`}},
		{"NaN where rejected", "user_id,age\nu1,NaN\n", []string{"row 1: age: NaN, and the feature's missing policy forbids it"}},
		{"infinity", "user_id,age,ctr\nu1,3,+Inf\n", []string{"row 1: ctr: +Inf is not finite"}},
		{"not an integer", "user_id,age\nu1,3.5\n", []string{"row 1: age: 3.5 is not an integer"}},
		{"not a bool", "user_id,age,vip\nu1,3,2\n", []string{"row 1: vip: 2 is not a bool"}},
		{"empty key", "user_id,age\n,3\n", []string{"row 1: user_id: key is empty"}},
		{"duplicate key", "user_id,age\nu1,3\nu2,4\nu1,5\n", []string{`row 3: user_id: key "u1" already in row 1`}},
		{"oversize string", "user_id,age,segment\nu1,3," + strings.Repeat("x", 300) + "\n", []string{"row 1: segment: 300 bytes, at most 256"}},
		{"ragged row", "user_id,age\nu1,3,4\n", []string{"row 1: file: 3 fields, the header has 2"}},
		{"empty file", "", []string{"file: empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := ReadCSV(strings.NewReader(tc.file), e, DefaultLimits)
			var te *Errors
			if !errors.As(err, &te) || rows != nil {
				t.Fatalf("rows %v, err %v: want *Errors and no rows", rows, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}

func TestErrorsAreBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("user_id,age\n")
	for range 1000 {
		b.WriteString("u,-1\n")
	}
	_, err := ReadCSV(strings.NewReader(b.String()), userEntity(t), DefaultLimits)
	var te *Errors
	if !errors.As(err, &te) || len(te.List) != MaxListed || te.Total < 1000 {
		t.Fatalf("%d listed of %d: %v", len(te.List), te.Total, err)
	}
	if _, err := ReadCSV(strings.NewReader("user_id,age\na,1\nb,2\nc,3\n"), userEntity(t), Limits{MaxRows: 2}); err == nil || !strings.Contains(err.Error(), "more than 2 rows") {
		t.Errorf("over the row limit: %v", err)
	}
}

// A file written by WriteParquet reads back to the same rows, NaNs and
// defaults included; so does its CSV twin's data.
func TestParquetRoundTrip(t *testing.T) {
	e := userEntity(t)
	in, err := ReadCSV(strings.NewReader("user_id,age,ctr,vip,segment\nu1,30,0.1234567890123,true,a\nu2,41,,,\nu3,0,1,false,b\n"), e, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteParquet(&buf, in); err != nil {
		t.Fatal(err)
	}
	out, err := ReadParquet(bytes.NewReader(buf.Bytes()), int64(buf.Len()), e, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(out.Keys, ",") != strings.Join(in.Keys, ",") || strings.Join(out.Strs, ",") != strings.Join(in.Strs, ",") {
		t.Fatalf("keys %v strs %v, want %v %v", out.Keys, out.Strs, in.Keys, in.Strs)
	}
	for i := range in.Nums {
		if math.Float64bits(in.Nums[i]) != math.Float64bits(out.Nums[i]) && !(math.IsNaN(in.Nums[i]) && math.IsNaN(out.Nums[i])) {
			t.Errorf("value %d: %v, want %v", i, out.Nums[i], in.Nums[i])
		}
	}
}

// A file that is not Parquet, or is cut short, is an error, never a panic.
func TestReadParquetMalformed(t *testing.T) {
	e := userEntity(t)
	in, _ := ReadCSV(strings.NewReader("user_id,age\nu1,30\nu2,31\n"), e, DefaultLimits)
	var buf bytes.Buffer
	if err := WriteParquet(&buf, in); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	for name, data := range map[string][]byte{
		"not parquet": []byte("user_id,age\nu1,30\n"),
		"truncated":   good[:len(good)/2],
		"empty":       nil,
		"corrupted":   append(append([]byte{}, good[:8]...), append(bytes.Repeat([]byte{0xff}, 40), good[48:]...)...),
	} {
		t.Run(name, func(t *testing.T) {
			if rows, err := ReadParquet(bytes.NewReader(data), int64(len(data)), e, DefaultLimits); err == nil {
				t.Errorf("read %d rows from a malformed file", rows.Len())
			}
		})
	}
}

// Keys stored as integers in Parquet are read as their decimal text.
func TestParquetIntegerKeys(t *testing.T) {
	e := userEntity(t)
	schema := parquet.NewSchema("user", parquet.Group{"user_id": parquet.Int(64), "age": parquet.Int(64)})
	var buf bytes.Buffer
	w := parquet.NewWriter(&buf, schema)
	uid, _ := schema.Lookup("user_id")
	age, _ := schema.Lookup("age")
	row := make(parquet.Row, 2)
	row[uid.ColumnIndex] = parquet.Int64Value(42).Level(0, 0, uid.ColumnIndex)
	row[age.ColumnIndex] = parquet.Int64Value(30).Level(0, 0, age.ColumnIndex)
	if _, err := w.WriteRows([]parquet.Row{row}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadParquet(bytes.NewReader(buf.Bytes()), int64(buf.Len()), e, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if rows.Len() != 1 || rows.Keys[0] != "42" || rows.Nums[0] != 30 {
		t.Errorf("keys %v, values %v", rows.Keys, rows.Nums)
	}
}

// A file within the row limit but past the cell limit is refused.
func TestCellLimit(t *testing.T) {
	_, err := ReadCSV(strings.NewReader("user_id,age\na,1\nb,2\nc,3\n"), userEntity(t), Limits{MaxRows: 100, MaxCells: 8})
	if err == nil || !strings.Contains(err.Error(), "cells") {
		t.Errorf("past the cell limit (3 rows x 4 features > 8): %v", err)
	}
}
