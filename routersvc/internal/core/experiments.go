package core

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/adrank/adrank/routersvc/internal/lab"
	"github.com/adrank/adrank/routersvc/internal/routing"
)

// ReportEvents joins click and conversion events to served impressions and
// returns what became of each, in order.
func (e *Engine) ReportEvents(ctx context.Context, events []Event) ([]lab.EventResult, error) {
	if err := ValidateEvents(events); err != nil {
		return nil, err
	}
	// Events are applied concurrently (each atomically), so that the store
	// can share transactions among them.
	results := make([]lab.EventResult, len(events))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, ev := range events {
		g.Go(func() error {
			res, err := e.lab.Event(gctx, lab.Event{
				ImpressionID: ev.ImpressionID, Conversion: ev.Type == EventConversion, Value: ev.Value, EventID: ev.EventID,
			})
			results[i] = res
			return err
		})
	}
	if err := g.Wait(); err != nil {
		// Whatever was applied stays applied; resending the batch is safe.
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, Errorf(KindUnavailable, "experiment state store: %v (events are idempotent: resend the batch)", err)
	}
	return results, nil
}

func (e *Engine) domain(name string) (*routing.Domain, error) {
	if name == "" {
		return nil, &Error{Kind: KindInvalid, Msg: "domain: is required", Fields: []FieldViolation{{Field: "domain", Description: "is required"}}}
	}
	d, ok := e.table.Snapshot().Domains[name]
	if !ok {
		return nil, Errorf(KindNotFound, "domain %q is not known", name)
	}
	return d, nil
}

// Report is a domain's experiment report.
type Report struct {
	lab.Report
	// Experiment is the experiment document in force; ConfigError is why the
	// last one written was refused, if it was.
	Experiment, ConfigError string
	ConfigLoadedAt          time.Time // zero: never loaded
	// Staleness is the batch snapshot against live pCTRs, by snapshot age.
	Staleness []Staleness
	// EdgeRejected counts the edge impressions this router rejected.
	EdgeRejected float64
}

// Report returns a domain's experiment report.
func (e *Engine) Report(ctx context.Context, domain string) (*Report, error) {
	d, err := e.domain(domain)
	if err != nil {
		return nil, err
	}
	r, err := e.lab.Report(ctx, d.Name, labDomain(d), slices.Sorted(maps.Keys(d.Versions)))
	if err != nil {
		return nil, Errorf(KindUnavailable, "experiment state store: %v", err)
	}
	out := &Report{Report: *r, Experiment: string(d.ExperimentRaw), ConfigError: d.ExperimentError, ConfigLoadedAt: d.ExperimentLoadedAt}
	if e.snapshots != nil {
		out.Staleness = e.snapshots.Staleness(d.Name)
	}
	out.EdgeRejected = e.EdgeRejected(d.Name)
	return out, nil
}

// PromoteCanary makes a domain's canary version production and returns it.
func (e *Engine) PromoteCanary(ctx context.Context, domain string) (string, error) {
	d, err := e.domain(domain)
	if err != nil {
		return "", err
	}
	v, err := e.lab.PromoteCanary(ctx, d.Name, labDomain(d))
	if err != nil {
		return "", canaryError(err)
	}
	return v, nil
}

// RollbackCanary stops a domain's canary, for reason.
func (e *Engine) RollbackCanary(ctx context.Context, domain, reason string) error {
	d, err := e.domain(domain)
	if err != nil {
		return err
	}
	if err := e.lab.RollbackCanary(ctx, d.Name, labDomain(d), reason); err != nil {
		return canaryError(err)
	}
	return nil
}

func canaryError(err error) error {
	if errors.Is(err, lab.ErrNoCanary) || errors.Is(err, lab.ErrNotPromotable) {
		return Errorf(KindFailedPrecondition, "%s", err.Error())
	}
	return Errorf(KindUnavailable, "canary: %v", err)
}

// DomainInfo is one domain's configuration and versions.
type DomainInfo struct {
	Name, ProductionVersion, ConfigError string
	ConfigLoadedAt                       time.Time // zero: no config
	Versions                             []VersionInfo
	// Mode is routing.ModeRealtime or routing.ModeBatch ("": no config).
	Mode string
	// Snapshot is the latest batch snapshot, if any.
	Snapshot *SnapshotInfo
	// AuctionConfigError: why the domain's auction config in Consul KV is
	// not the one in force.
	AuctionConfigError string
}

// VersionInfo is one model version's instances.
type VersionInfo struct {
	Name           string
	Healthy, Total int
	SHA256         string
	// Conflict: instances of another model under this version, left out.
	Conflict string
}

// Domains lists the domains, by name.
func (e *Engine) Domains() []DomainInfo {
	var out []DomainInfo
	for _, d := range e.table.Snapshot().Sorted() {
		di := DomainInfo{Name: d.Name, ConfigError: d.ConfigError, ProductionVersion: d.ProductionVersion(), Mode: d.Mode()}
		if e.snapshots != nil {
			if si, ok := e.snapshots.Info(d.Name); ok {
				di.Snapshot = &si
			}
		}
		if e.auctionErrors != nil {
			di.AuctionConfigError = e.auctionErrors(d.Name)
		}
		if d.Config != nil {
			di.ConfigLoadedAt = d.LoadedAt
		}
		for _, name := range slices.Sorted(maps.Keys(d.Versions)) {
			v := d.Versions[name]
			di.Versions = append(di.Versions, VersionInfo{Name: v.Name, Healthy: v.Healthy, Total: v.Total, SHA256: v.SHA256, Conflict: v.Conflict})
		}
		out = append(out, di)
	}
	return out
}

// Flush writes what the lab has recorded so far (reports then include it).
func (e *Engine) Flush(ctx context.Context) error { return e.lab.Flush(ctx) }
