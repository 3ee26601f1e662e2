package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

// exportTimeout bounds an export.
const exportTimeout = 10 * time.Minute

// trainingColumns are the columns of an export before the features; click
// comes after them.
var trainingColumns = []string{"request_id", "user_id", "ad_id", "version", "time", "slot"}

// runExport is `adrankctl features export`: the domain's logged requests as
// a training file, one row per shown ad, with the features it was served
// with and its click.
func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var out, format string
	rf, pos, err := routerCommand("features export", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "the training file to write (required)")
		fs.StringVar(&format, "format", "", "parquet or csv; default: from --out's extension")
	})
	if err != nil {
		return err
	}
	domain := ""
	if len(pos) == 1 {
		domain = pos[0]
	}
	if domain == "" || out == "" {
		return errors.New("usage: adrankctl features export DOMAIN --out FILE.parquet|FILE.csv [--router ADDR] [--token T]")
	}
	if format == "" {
		format = strings.TrimPrefix(strings.ToLower(filepath.Ext(out)), ".")
	}
	if format != "parquet" && format != "csv" {
		return fmt.Errorf("--format %q: want parquet or csv", format)
	}
	rf.timeout = exportTimeout
	client, ctx, done, err := rf.dial(ctx)
	if err != nil {
		return err
	}
	defer done()
	stream, err := client.ExportTrainingData(ctx, &routerv1.ExportTrainingDataRequest{Domain: domain})
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	var w trainingWriter
	rows, clicks, skipped := 0, 0, int64(0)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if w == nil && len(msg.GetRows()) > 0 {
			names := msg.GetFeatureNames()
			if len(names) == 0 {
				return errors.New("the router sent rows before the feature names")
			}
			for _, n := range names {
				if slices.Contains(trainingColumns, n) || n == "click" {
					return fmt.Errorf("a feature is named %q, as a column of the export is", n)
				}
			}
			if format == "csv" {
				w, err = newCSVTraining(bw, names)
			} else {
				w = newParquetTraining(bw, names)
			}
			if err != nil {
				return err
			}
		}
		for _, r := range msg.GetRows() {
			if err := w.write(r); err != nil {
				return err
			}
			rows++
			if r.GetClick() {
				clicks++
			}
		}
		skipped += msg.GetSkipped()
	}
	if w == nil {
		return fmt.Errorf("nothing to export: no row, %d malformed records skipped", skipped)
	}
	if err := w.close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %d rows, %d clicked, %d skipped\n", out, rows, clicks, skipped)
	return nil
}

type trainingWriter interface {
	write(r *routerv1.TrainingRow) error
	close() error
}

// csvTraining writes CSV: the columns, the features (empty when missing),
// then click (0 or 1).
type csvTraining struct {
	w   *csv.Writer
	rec []string
}

func newCSVTraining(w io.Writer, names []string) (*csvTraining, error) {
	c := &csvTraining{w: csv.NewWriter(w)}
	header := append(append(append([]string{}, trainingColumns...), names...), "click")
	c.rec = make([]string, len(header))
	return c, c.w.Write(header)
}

func (c *csvTraining) write(r *routerv1.TrainingRow) error {
	c.rec = append(c.rec[:0], r.GetRequestId(), r.GetUserId(), r.GetAdId(), r.GetVersion(),
		r.GetTime().AsTime().UTC().Format(time.RFC3339Nano), strconv.Itoa(int(r.GetSlot())))
	for _, v := range r.GetValues() {
		if math.IsNaN(v) {
			c.rec = append(c.rec, "")
		} else {
			c.rec = append(c.rec, strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	click := "0"
	if r.GetClick() {
		click = "1"
	}
	return c.w.Write(append(c.rec, click))
}

func (c *csvTraining) close() error {
	c.w.Flush()
	return c.w.Error()
}

// parquetTraining writes Parquet: strings, time as a timestamp in
// milliseconds, slot and click as int32, each feature an optional double
// (null when missing).
type parquetTraining struct {
	pw    *parquet.Writer
	cols  []int // leaf column of trainingColumns..., features..., click
	nfeat int
	batch []parquet.Row
}

func newParquetTraining(w io.Writer, names []string) *parquetTraining {
	g := parquet.Group{
		"request_id": parquet.String(), "user_id": parquet.String(), "ad_id": parquet.String(), "version": parquet.String(),
		"time": parquet.Timestamp(parquet.Millisecond), "slot": parquet.Int(32), "click": parquet.Int(32),
	}
	for _, n := range names {
		g[n] = parquet.Optional(parquet.Leaf(parquet.DoubleType))
	}
	schema := parquet.NewSchema("training", g)
	p := &parquetTraining{pw: parquet.NewWriter(w, schema, parquet.Compression(&parquet.Zstd)), nfeat: len(names)}
	for _, n := range append(append(append([]string{}, trainingColumns...), names...), "click") {
		leaf, _ := schema.Lookup(n)
		p.cols = append(p.cols, leaf.ColumnIndex)
	}
	return p
}

func (p *parquetTraining) write(r *routerv1.TrainingRow) error {
	if len(r.GetValues()) != p.nfeat {
		return fmt.Errorf("row of request %s has %d values for %d features", r.GetRequestId(), len(r.GetValues()), p.nfeat)
	}
	row := make(parquet.Row, len(p.cols))
	c := p.cols
	for i, v := range []string{r.GetRequestId(), r.GetUserId(), r.GetAdId(), r.GetVersion()} {
		row[c[i]] = parquet.ValueOf(v).Level(0, 0, c[i])
	}
	row[c[4]] = parquet.Int64Value(r.GetTime().AsTime().UnixMilli()).Level(0, 0, c[4])
	row[c[5]] = parquet.Int32Value(r.GetSlot()).Level(0, 0, c[5])
	for j, v := range r.GetValues() {
		k := c[len(trainingColumns)+j]
		if math.IsNaN(v) {
			row[k] = parquet.Value{}.Level(0, 0, k)
		} else {
			row[k] = parquet.DoubleValue(v).Level(0, 1, k)
		}
	}
	click := int32(0)
	if r.GetClick() {
		click = 1
	}
	k := c[len(c)-1]
	row[k] = parquet.Int32Value(click).Level(0, 0, k)
	p.batch = append(p.batch, row)
	if len(p.batch) == 1024 {
		return p.flush()
	}
	return nil
}

func (p *parquetTraining) flush() error {
	_, err := p.pw.WriteRows(p.batch)
	p.batch = p.batch[:0]
	return err
}

func (p *parquetTraining) close() error {
	if err := p.flush(); err != nil {
		return err
	}
	return p.pw.Close()
}
