package batch

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"os"

	"github.com/adrank/adrank/ml/world"
)

// Export writes the model input rows the job scores for cfg's shard of the
// world, in order, for the batch benchmark: PREFIX.f32 (float32, row-major,
// NaN for missing), PREFIX.json (rows, cols, names) and PREFIX.go.f32
// (adrank's score of each row), so another scorer can be timed on exactly
// the same rows and checked against adrank's scores.
func Export(cfg Config, w *world.World, prefix string) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	lay, err := newLayout(cfg.Model.Model, cfg.Require)
	if err != nil {
		return err
	}
	src, err := newWorldSource(w, cfg.Domain, inShard{cfg.Shard, cfg.Shards}, 0)
	if err != nil {
		return err
	}
	rowsF, err := os.Create(prefix + ".f32")
	if err != nil {
		return err
	}
	defer rowsF.Close()
	predsF, err := os.Create(prefix + ".go.f32")
	if err != nil {
		return err
	}
	defer predsF.Close()
	rows, preds := bufio.NewWriterSize(rowsF, 1<<20), bufio.NewWriterSize(predsF, 1<<20)
	s := newScorer(lay)
	var n int64
	var buf []byte
	for {
		c, err := src.next(cfg.ChunkPairs)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		s.rows(&c)
		for _, x := range s.xs {
			buf = buf[:0]
			for _, v := range x {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(float32(v)))
			}
			if _, err := rows.Write(buf); err != nil {
				return err
			}
		}
		for _, p := range s.predict() {
			if _, err := preds.Write(binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(p)))); err != nil {
				return err
			}
		}
		n += int64(len(s.xs))
	}
	for _, b := range []*bufio.Writer{rows, preds} {
		if err := b.Flush(); err != nil {
			return err
		}
	}
	meta, err := json.Marshal(map[string]any{"rows": n, "cols": lay.n, "names": lay.m.Features()})
	if err != nil {
		return err
	}
	return os.WriteFile(prefix+".json", meta, 0o644)
}
