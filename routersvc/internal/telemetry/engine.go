package telemetry

import (
	"context"

	"github.com/adrank/adrank/routersvc/internal/core"
)

// EngineState reads the domains' state from the engine: instances and
// config errors from the routing table, canary and SRM from each domain's
// report.
func EngineState(e *core.Engine) func(ctx context.Context) ([]Domain, error) {
	return func(ctx context.Context) ([]Domain, error) {
		var out []Domain
		for _, info := range e.Domains() {
			d := Domain{Name: info.Name, ConfigError: info.ConfigError + info.AuctionConfigError}
			for _, v := range info.Versions {
				d.Versions = append(d.Versions, Version{Name: v.Name, Healthy: v.Healthy, Total: v.Total, ProductionOrNone: v.Name == info.ProductionVersion})
			}
			r, err := e.Report(ctx, info.Name)
			if err != nil {
				return out, err
			}
			d.ConfigError += r.ConfigError
			d.Experiment = r.ExperimentID
			if c := r.Canary; c != nil {
				d.CanaryVersion, d.CanaryState, d.CanaryShare = c.Version, string(c.State), c.SharePercent
			}
			if ab := r.AB; ab != nil {
				d.SRMFlagged = ab.SRMFlagged
			}
			out = append(out, d)
		}
		return out, nil
	}
}
