package batch

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/snapshot"
)

// BenchmarkJob runs the whole job (world features, scoring, top K, the
// embedded store) on 500 users x 1,000 ads of feed with the GBDT.
func BenchmarkJob(b *testing.B) {
	m, err := model.Load("../../../models/feed/v2.json")
	if err != nil {
		b.Fatal(err)
	}
	wc := world.DefaultConfig()
	wc.Users = 500
	w, err := world.New(wc)
	if err != nil {
		b.Fatal(err)
	}
	st, err := snapshot.OpenDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ResetTimer()
	for i := range b.N {
		cfg := Config{Domain: "feed", Version: "v2", Model: m, Generation: "g" + string(rune('a'+i%26)) + string(rune('a'+i/26%26))}
		if _, err := Run(context.Background(), cfg, st, w, log); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*500*1000/b.Elapsed().Seconds(), "pairs/s")
}
