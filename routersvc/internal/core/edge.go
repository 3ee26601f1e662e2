package core

import (
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"sync"

	"github.com/adrank/adrank/platform/assign"
	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/routing"
)

// EdgePlan is what an edge client needs from the router: how to assign its
// user, the models it may run, and the domain's auction config.
type EdgePlan struct {
	assign.Plan
	// ModelSHA256 of each version the plan can assign.
	ModelSHA256 map[string]string
	// AuctionConfig is the domain's auction config document; nil: none.
	AuctionConfig []byte
}

// AuctionConfigs reads a domain's auction config document (nil: none).
type AuctionConfigs func(ctx context.Context, domain string) ([]byte, error)

// UseAuctionConfigs lets EdgePlan read auction configs with f.
func (e *Engine) UseAuctionConfigs(f AuctionConfigs) { e.auctionConfigs = f }

// UseAuctionErrors lets Domains say why a domain's auction config is not
// the one in force (f returns "" when it is).
func (e *Engine) UseAuctionErrors(f func(domain string) string) { e.auctionErrors = f }

// EdgePlan returns the domain's edge plan.
func (e *Engine) EdgePlan(ctx context.Context, domain string) (EdgePlan, error) {
	d, err := e.domain(domain)
	if err != nil {
		return EdgePlan{}, err
	}
	prod := d.ProductionVersion()
	if prod == "" {
		return EdgePlan{}, Errorf(KindUnavailable, "domain %q has no production version: set %s%s", d.Name, routing.ConfigPrefix, d.Name)
	}
	p := EdgePlan{Plan: assign.Plan{Domain: d.Name, Production: prod}, ModelSHA256: map[string]string{}}
	versions := []string{prod}
	if x := d.Experiment; x != nil {
		switch {
		case x.Canary != nil:
			share, rolledBack := e.lab.CanaryShare(d.Name, x.Canary)
			p.Experiment = x.ID()
			p.Canary = &assign.CanaryPlan{Version: x.Canary.Version, SharePercent: share, InternalUsers: x.Canary.InternalUsers, RolledBack: rolledBack}
			versions = append(versions, x.Canary.Version)
		case x.AB != nil:
			p.Experiment = x.ID()
			p.AB = &assign.ABPlan{Salt: x.AB.Salt}
			for _, a := range x.AB.Arms {
				p.AB.Arms = append(p.AB.Arms, assign.Arm{Version: a.Version, Weight: a.Weight})
				versions = append(versions, a.Version)
			}
		}
	}
	for _, v := range versions {
		if vs := d.Versions[v]; vs != nil && vs.SHA256 != "" {
			p.ModelSHA256[v] = vs.SHA256
		}
	}
	if e.auctionConfigs != nil {
		if p.AuctionConfig, err = e.auctionConfigs(ctx, d.Name); err != nil {
			return EdgePlan{}, Errorf(KindUnavailable, "auction config of %q: %v", d.Name, err)
		}
	}
	return p, nil
}

// EdgeFeatures are a user's and some ads' features for a device: what the
// features service serves for a request without context.
type EdgeFeatures struct {
	User map[string]float64
	Ads  []map[string]float64
}

// EdgeFeatures syncs features to a device.
func (e *Engine) EdgeFeatures(ctx context.Context, domain, user string, adIDs []string) (EdgeFeatures, error) {
	if _, err := e.domain(domain); err != nil {
		return EdgeFeatures{}, err
	}
	var v violations
	v.checkID("user_id", user, true)
	if len(adIDs) == 0 || len(adIDs) > MaxBatchRows {
		v.add("ad_ids", "want 1 to %d ads", MaxBatchRows)
	}
	for i, id := range adIDs {
		v.checkID(fmt.Sprintf("ad_ids[%d]", i), id, true)
	}
	if err := v.err(); err != nil {
		return EdgeFeatures{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, e.limits.Budget)
	defer cancel()
	f, err := e.down.Features.Features(ctx, FeatureQuery{UserID: user, AdIDs: adIDs})
	if err != nil {
		return EdgeFeatures{}, downstreamError(ctx, "features", err)
	}
	if !wellFormed(f) || f.Candidates.Rows != len(adIDs) {
		return EdgeFeatures{}, Errorf(KindInternal, "features returned a malformed table")
	}
	out := EdgeFeatures{User: map[string]float64{}, Ads: make([]map[string]float64, len(adIDs))}
	if f.Shared.Rows > 0 {
		out.User = present(f.Shared.Names, f.Shared.Values)
	}
	w := len(f.Candidates.Names)
	for i := range adIDs {
		out.Ads[i] = present(f.Candidates.Names, f.Candidates.Values[i*w:(i+1)*w])
	}
	return out, nil
}

// present maps a row's non-missing values by name.
func present(names []string, row []float64) map[string]float64 {
	m := make(map[string]float64, len(names))
	for j, n := range names {
		if !math.IsNaN(row[j]) {
			m[n] = row[j]
		}
	}
	return m
}

func invalid(field, format string, args ...any) error {
	var v violations
	v.add(field, format, args...)
	return v.err()
}

// EdgeServed is one ranking shown on a device.
type EdgeServed struct {
	RequestID, UserID, Version, ModelSHA256 string
	Results                                 []EdgeResult
}

// EdgeResult is one ad shown on a device.
type EdgeResult struct {
	AdID         string
	Slot         int
	PriceMicros  int64
	ImpressionID string
}

// EdgeOutcome is what became of one EdgeServed.
type EdgeOutcome struct {
	Result lab.EventResult
	Reason string // why it was rejected
	// ImpressionIDs, of an accepted or duplicate request, are the IDs to
	// send its events with (the router's signed ones), in result order.
	ImpressionIDs []string
}

// Rejected edge impressions, by domain (this router's count).
type edgeCounts struct {
	mu       sync.Mutex
	rejected map[string]float64
}

func (c *edgeCounts) reject(domain string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rejected == nil {
		c.rejected = map[string]float64{}
	}
	c.rejected[domain]++
}

func (c *edgeCounts) get(domain string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rejected[domain]
}

// EdgeImpressionPrefix starts the stored ID of an impression served on a
// device.
const EdgeImpressionPrefix = "edge-"

// ReportEdgeImpressions records impressions served on devices, as served
// requests of the domain, once per request ID. A malformed batch fails as
// a whole (KindInvalid, naming the field) and changes nothing; a served
// request from a model this router does not serve for its version, with an
// impression ID that is not the one its request, ad and slot make, or
// ranked by another version than the user's arm is rejected and counted.
func (e *Engine) ReportEdgeImpressions(ctx context.Context, domain string, served []EdgeServed) ([]EdgeOutcome, error) {
	d, err := e.domain(domain)
	if err != nil {
		return nil, err
	}
	if err := validateEdge(served); err != nil {
		return nil, err
	}
	out := make([]EdgeOutcome, len(served))
	var record []lab.Served
	var at []int
	ld := labDomain(d)
	for i, s := range served {
		why := ""
		a := e.lab.Assign(d.Name, ld, s.UserID, s.RequestID)
		switch v := d.Versions[s.Version]; {
		case v == nil || v.SHA256 == "" || v.SHA256 != s.ModelSHA256:
			why = fmt.Sprintf("model %.12s... is not the one this router serves for %s/%s", s.ModelSHA256, d.Name, s.Version)
		case a.Version != s.Version:
			why = fmt.Sprintf("user %s's arm is version %q, not %q", s.UserID, a.Version, s.Version)
		}
		ls := lab.Served{Domain: d.Name, UserID: s.UserID, RequestID: s.RequestID, A: a, Edge: true}
		ids := make([]string, len(s.Results))
		for j, r := range s.Results {
			if why == "" && r.ImpressionID != assign.ImpressionID(d.Name, s.UserID, s.RequestID, r.AdID, r.Slot) {
				why = fmt.Sprintf("impression_id %s is not the one of request %s, ad %s, slot %d", r.ImpressionID, s.RequestID, r.AdID, r.Slot)
			}
			// Recorded under an ID of the edge's own ("edge-" and the
			// device's), and handed back signed: a device that reports an
			// online request's ID gets no signature of an online
			// impression, only of an edge one that was never recorded.
			plain := EdgeImpressionPrefix + r.ImpressionID
			ids[j] = e.ids.Sign(plain)
			ls.Results = append(ls.Results, lab.ServedResult{ImpressionID: plain, AdID: r.AdID, Slot: r.Slot, Price: r.PriceMicros, Version: s.Version})
		}
		if why != "" {
			out[i] = EdgeOutcome{Result: lab.Rejected, Reason: why}
			e.edge.reject(d.Name)
			continue
		}
		out[i].ImpressionIDs = ids
		record, at = append(record, ls), append(at, i)
	}
	if len(record) > 0 {
		applied, err := e.lab.RecordOnce(ctx, record, nil, nil, 0)
		if err != nil {
			return nil, Errorf(KindUnavailable, "experiment state store: %v", err)
		}
		for j, i := range at {
			out[i].Result = lab.Accepted
			if !applied[j] {
				out[i].Result = lab.Duplicate
			}
		}
	}
	return out, nil
}

// EdgeRejected is how many edge impressions this router rejected for domain.
func (e *Engine) EdgeRejected(domain string) float64 { return e.edge.get(domain) }

func validateEdge(served []EdgeServed) error {
	if len(served) == 0 || len(served) > MaxEvents {
		return invalid("served", "want 1 to %d served requests", MaxEvents)
	}
	for i, s := range served {
		f := func(name string) string { return fmt.Sprintf("served[%d].%s", i, name) }
		var v violations
		v.checkID(f("request_id"), s.RequestID, true)
		v.checkID(f("user_id"), s.UserID, true)
		if err := v.err(); err != nil {
			return err
		}
		switch {
		case !routing.Name.MatchString(s.Version):
			return invalid(f("version"), "%q is not a version name", s.Version)
		case !isHex(s.ModelSHA256, 64):
			return invalid(f("model_sha256"), "want 64 hex digits")
		case len(s.Results) == 0 || len(s.Results) > MaxEdgeSlots:
			return invalid(f("results"), "want 1 to %d", MaxEdgeSlots)
		}
		seen := map[int]bool{}
		for j, r := range s.Results {
			g := func(name string) string { return fmt.Sprintf("served[%d].results[%d].%s", i, j, name) }
			var v violations
			v.checkID(g("ad_id"), r.AdID, true)
			if err := v.err(); err != nil {
				return err
			}
			switch {
			case r.Slot < 1 || r.Slot > MaxEdgeSlots || seen[r.Slot]:
				return invalid(g("slot"), "want a distinct slot from 1 to %d", MaxEdgeSlots)
			case r.PriceMicros < 0 || r.PriceMicros > MaxBidMicros:
				return invalid(g("price_micros"), "want 0 to %d", int64(MaxBidMicros))
			case !isHex(r.ImpressionID, 32):
				return invalid(g("impression_id"), "want 32 hex digits")
			}
			seen[r.Slot] = true
		}
	}
	return nil
}

// MaxEdgeSlots bounds one edge ranking's results.
const MaxEdgeSlots = 100

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
