package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

func trainingRows() []*routerv1.TrainingRow {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	return []*routerv1.TrainingRow{
		{RequestId: "r1", UserId: "u1", AdId: "ad1", Version: "v1", Time: timestamppb.New(at), Slot: 1, Values: []float64{0.5, math.NaN()}, Click: true},
		{RequestId: "r1", UserId: "u1", AdId: "ad2", Version: "v1", Time: timestamppb.New(at), Slot: 2, Values: []float64{0.25, 3}},
	}
}

// What the Parquet export writes reads back with its types: missing
// features as nulls, clicks as 0 and 1.
func TestParquetTrainingReadsBack(t *testing.T) {
	var buf bytes.Buffer
	w := newParquetTraining(&buf, []string{"ctr", "age"})
	for _, r := range trainingRows() {
		if err := w.write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	type row struct {
		RequestID string    `parquet:"request_id"`
		AdID      string    `parquet:"ad_id"`
		Time      time.Time `parquet:"time,timestamp(millisecond)"`
		Slot      int32     `parquet:"slot"`
		CTR       *float64  `parquet:"ctr,optional"`
		Age       *float64  `parquet:"age,optional"`
		Click     int32     `parquet:"click"`
	}
	rows, err := parquet.Read[row](bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].AdID != "ad1" || rows[0].Click != 1 || rows[1].Click != 0 || rows[1].Slot != 2 {
		t.Fatalf("%+v", rows)
	}
	if rows[0].CTR == nil || *rows[0].CTR != 0.5 || rows[0].Age != nil || rows[1].Age == nil || *rows[1].Age != 3 {
		t.Errorf("features: %v %v, %v %v", rows[0].CTR, rows[0].Age, rows[1].CTR, rows[1].Age)
	}
	if !rows[0].Time.Equal(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("time %v", rows[0].Time)
	}
}

func TestCSVTraining(t *testing.T) {
	var buf bytes.Buffer
	w, err := newCSVTraining(&buf, []string{"ctr", "age"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range trainingRows() {
		if err := w.write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	want := "request_id,user_id,ad_id,version,time,slot,ctr,age,click\nr1,u1,ad1,v1,2026-11-26T12:00:00Z,1,0.5,,1\nr1,u1,ad2,v1,2026-11-26T12:00:00Z,2,0.25,3,0\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, strings.TrimSpace(want))
	}
}
