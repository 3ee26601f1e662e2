// Command statefill writes served requests' impressions straight into a
// router's bbolt state file, keyed and encoded as the router records them
// (an impression per slot under its hashed ID, and the request's
// once-key), live for the attribution window plus an hour. Unlike a
// router, it writes in key order, and no per-user sums or counters. make bench uses it to measure a router
// whose store already holds millions of impressions against a fresh one.
// The file must not be open in a running router.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/adrank/adrank/platform/assign"
	"github.com/adrank/adrank/routersvc/internal/store"
)

func main() {
	fs := flag.NewFlagSet("statefill", flag.ExitOnError)
	path := fs.String("state-file", "", "the router's bbolt state file (created if missing)")
	n := fs.Int("impressions", 5_000_000, "impressions to write")
	slots := fs.Int("slots", 3, "impressions per request")
	ttl := fs.Duration("ttl", 25*time.Hour, "how long they live: the attribution window plus an hour, as the router keeps them")
	_ = fs.Parse(os.Args[1:])
	if err := run(*path, *n, *slots, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "statefill:", err)
		os.Exit(1)
	}
}

// batch is the most entries written in one transaction.
const batch = 100_000

func run(path string, n, slots int, ttl time.Duration) error {
	switch {
	case path == "":
		return fmt.Errorf("--state-file: required")
	case n < 0:
		return fmt.Errorf("--impressions: %d is negative", n)
	case slots < 1 || slots > 100:
		return fmt.Errorf("--slots: %d is not within 1 to 100", slots)
	case n > 1_000_000_000:
		return fmt.Errorf("--impressions: %d is above 1,000,000,000", n)
	case ttl <= 0:
		return fmt.Errorf("--ttl: %v is not positive", ttl)
	}
	st, err := store.OpenBolt(path)
	if err != nil {
		return err
	}
	start := time.Now()
	requests, err := fill(st, n, slots, ttl, start)
	if err = errors.Join(err, st.Close()); err != nil {
		return err
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	fmt.Printf("statefill: %d impressions of %d requests in %s: %.0f MB, %v\n", n, requests, path, float64(info.Size())/1e6, time.Since(start).Round(time.Millisecond))
	return nil
}

// fill writes n impressions of requests with slots each, and returns how
// many requests.
func fill(st *store.Bolt, n, slots int, ttl time.Duration, start time.Time) (int, error) {
	// The IDs are hashes, so the router's own writes land all over the
	// tree. The fill writes them in key order, which is what lets it write
	// millions in about a minute (and leaves its pages about half full).
	// Only the IDs are held and sorted; each impression is made again
	// when written.
	type slot struct {
		id   string
		req  int32
		slot int8
	}
	ids := make([]slot, 0, n)
	impression := func(req, s int) store.Impression {
		r, user, ad := "fill-"+strconv.Itoa(req), "u"+strconv.Itoa(1+req%5000), "ad"+strconv.Itoa(1+(req*7+s)%1000)
		return store.Impression{
			ID: assign.ImpressionID("feed", user, r, ad, s), RequestID: r, Domain: "feed", UserID: user, AdID: ad,
			Version: "v2", Strategy: "production", Group: "production", Propensity: 1, Slot: s, Price: 1_000 + int64(req%9_000), At: start,
		}
	}
	for i := 0; len(ids) < n; i++ {
		for s := 1; s <= slots && len(ids) < n; s++ {
			ids = append(ids, slot{id: impression(i, s).ID, req: int32(i), slot: int8(s)})
		}
	}
	slices.SortFunc(ids, func(a, b slot) int { return strings.Compare(a.id, b.id) })
	ctx := context.Background()
	for lo := 0; lo < len(ids); lo += batch {
		hi := min(lo+batch, len(ids))
		ops := make([]store.Op, 0, hi-lo)
		for _, x := range ids[lo:hi] {
			ops = append(ops, store.Op{Impressions: []store.Impression{impression(int(x.req), int(x.slot))}, ImpressionTTL: ttl})
		}
		if _, err := st.ApplyAll(ctx, ops); err != nil {
			return 0, err
		}
	}
	// The once-keys of the requests, in key order too.
	requests := (n + slots - 1) / slots
	onces := make([]string, requests)
	for i := range onces {
		onces[i] = "served|feed|fill-" + strconv.Itoa(i)
	}
	slices.Sort(onces)
	for lo := 0; lo < len(onces); lo += batch {
		hi := min(lo+batch, len(onces))
		ops := make([]store.Op, 0, hi-lo)
		for _, k := range onces[lo:hi] {
			ops = append(ops, store.Op{Once: k, OnceTTL: ttl})
		}
		if _, err := st.ApplyAll(ctx, ops); err != nil {
			return 0, err
		}
	}
	return requests, nil
}
