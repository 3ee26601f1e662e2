package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/adrank/adrank/adrankctl/internal/batch"
	"github.com/adrank/adrank/platform/snapshot"
)

// --every keeps the job running: a generation each period, named for the
// period, the oldest pruned past --keep.
func TestBatchRunEvery(t *testing.T) {
	store := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"batch", "run", "--domain", "feed", "--version", "v1", "--model", "../../../models/feed/v1.json",
		"--store", store, "--every", "1s", "--keep", "2", "--users", "20", "--ads-per-domain", "30", "--progress", "none"}, nil, &out, &errOut)
	if err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var s struct {
			Generation string `json:"generation"`
			Complete   bool   `json:"complete"`
			Pairs      int64  `json:"generation_pairs"`
		}
		if err := json.Unmarshal([]byte(line), &s); err != nil || !s.Complete || s.Pairs != 20*30 {
			t.Fatalf("summary %q: %v", line, err)
		}
		names = append(names, s.Generation)
	}
	// Runs at 0 s and then on each of the next whole seconds: at least 3
	// in 3.5 s on any machine that scores 600 pairs in half a second.
	if len(names) < 3 || names[0] == names[1] || !strings.HasPrefix(names[0], "v1-") {
		t.Fatalf("generations %v", names)
	}
	st, err := snapshot.OpenDir(store)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	gens, err := st.Generations(context.Background(), "feed")
	if err != nil || len(gens) != 2 || gens[0].Generation != names[len(names)-1] {
		t.Fatalf("kept %+v (%v), want the newest 2 of %v", gens, err, names)
	}
}

func TestBatchRunRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"batch"}, "usage"},
		{[]string{"batch", "run", "--version", "v1"}, "--domain and --version are required"},
		{[]string{"batch", "run", "--domain", "feed", "--version", "v1", "--shard", "2/2"}, "--shard"},
		{[]string{"batch", "run", "--domain", "feed", "--version", "v1", "--shard", "x"}, "--shard"},
		{[]string{"batch", "run", "--domain", "feed", "--version", "v9"}, "v9.json"},
		{[]string{"batch", "run", "--domain", "feed", "--version", "v1", "--model", "../../../models/feed/v1.json", "--progress", "loud", "--store", "STORE"}, "--progress"},
	} {
		for i, a := range tc.args {
			if a == "STORE" {
				tc.args[i] = t.TempDir()
			}
		}
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, nil, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.says)
		}
	}
}

func TestProgressBarShowsRate(t *testing.T) {
	var b bytes.Buffer
	bar := batch.NewBar(&b)
	bar.Start("users", 10, 100)
	time.Sleep(150 * time.Millisecond) // past the bar's throttle
	bar.Add(40)
	bar.Finish()
	if s := b.String(); !strings.Contains(s, "scoring") || !strings.Contains(s, "users/s") || !strings.Contains(s, "/100") {
		t.Fatalf("bar output %q", s)
	}
}
