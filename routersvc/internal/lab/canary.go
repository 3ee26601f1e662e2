package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/adrank/adrank/platform/experiment"
	"github.com/adrank/adrank/routersvc/internal/stats"
	"github.com/adrank/adrank/routersvc/internal/store"
)

// CanaryState is where a canary is in its life. Its value is what the store
// keeps and the report shows.
type CanaryState string

// Canary states.
const (
	CanaryRunning    CanaryState = "running"
	CanaryCompleted  CanaryState = "completed" // at the last step, waiting to be promoted
	CanaryRolledBack CanaryState = "rolled_back"
	CanaryPromoted   CanaryState = "promoted"
)

// canaryState is kept in the store so that every replica agrees and a
// restart resumes it.
type canaryState struct {
	Config      string      `json:"config"` // hash of the canary section it belongs to
	State       CanaryState `json:"state"`
	Step        int         `json:"step"`
	StepStarted time.Time   `json:"step_started"`
	Reason      string      `json:"reason,omitempty"`
}

func (s canaryState) share(c *experiment.Canary) float64 {
	switch s.State {
	case CanaryRolledBack:
		return 0
	case CanaryCompleted, CanaryPromoted:
		return 100
	}
	return c.Steps[min(s.Step, len(c.Steps)-1)]
}

func canaryConfigHash(c *experiment.Canary) string {
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func canaryKey(domain string) string { return "canary|" + domain }

// canaryState returns the cached state for the domain's canary; a canary not
// seen yet starts at its first step.
func (l *Lab) canaryState(domain string, c *experiment.Canary) canaryState {
	l.mu.RLock()
	st, ok := l.canary[domain]
	l.mu.RUnlock()
	if ok && st.Config == canaryConfigHash(c) {
		return st
	}
	return canaryState{Config: canaryConfigHash(c), State: CanaryRunning}
}

// loadCanary reads the stored state, starting it when absent or when the
// canary section changed.
func (l *Lab) loadCanary(ctx context.Context, domain string, c *experiment.Canary) (canaryState, []byte, error) {
	raw, err := l.o.Store.Get(ctx, canaryKey(domain))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return canaryState{}, nil, err
	}
	var st canaryState
	if raw != nil {
		if err := json.Unmarshal(raw, &st); err != nil {
			return canaryState{}, nil, err
		}
	}
	if raw == nil || st.Config != canaryConfigHash(c) {
		fresh := canaryState{Config: canaryConfigHash(c), State: CanaryRunning, StepStarted: l.o.Now()}
		if _, err := l.swapCanary(ctx, domain, raw, fresh); err != nil {
			return canaryState{}, nil, err
		}
		return l.loadCanary(ctx, domain, c)
	}
	return st, raw, nil
}

func (l *Lab) swapCanary(ctx context.Context, domain string, old []byte, st canaryState) (bool, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return false, err
	}
	return l.o.Store.CompareAndSwap(ctx, canaryKey(domain), old, b)
}

// controlCanary evaluates the guardrails and steps the canary up on
// schedule. Replicas may race; compare-and-swap makes one of them win.
func (l *Lab) controlCanary(ctx context.Context, domain string, d Domain) {
	c := d.Exp.Canary
	st, raw, err := l.loadCanary(ctx, domain, c)
	if err != nil {
		l.o.Log.Warn("canary state unavailable", "domain", domain, "error", err)
		return
	}
	next := st
	if st.State == CanaryRunning {
		if reason, err := l.guardrails(ctx, domain, d); err != nil {
			l.o.Log.Warn("canary guardrails unavailable", "domain", domain, "error", err)
		} else if reason != "" {
			next.State, next.Reason = CanaryRolledBack, reason
		} else if l.o.Now().Sub(st.StepStarted) >= c.StepInterval.Duration && l.judged(ctx, domain, d) {
			// A step is taken only once the guardrails have had the data
			// they need, however short the interval.
			if st.Step+1 < len(c.Steps) {
				next.Step, next.StepStarted = st.Step+1, l.o.Now()
			} else if c.Steps[len(c.Steps)-1] >= 100 {
				next.State = CanaryCompleted
			}
		}
	}
	if next != st {
		ok, err := l.swapCanary(ctx, domain, raw, next)
		if err != nil {
			l.o.Log.Warn("canary state write failed", "domain", domain, "error", err)
			return
		}
		if ok {
			switch next.State {
			case CanaryRolledBack:
				l.o.Log.Error("canary rolled back", "domain", domain, "version", c.Version, "reason", next.Reason)
			case CanaryCompleted:
				l.o.Log.Info("canary at 100%; promote it by hand", "domain", domain, "version", c.Version)
			default:
				l.o.Log.Info("canary stepped up", "domain", domain, "version", c.Version, "share_percent", c.Steps[next.Step])
			}
		}
		if next, _, err = l.loadCanary(ctx, domain, c); err != nil {
			return
		}
	}
	l.mu.Lock()
	l.canary[domain] = next
	l.mu.Unlock()
}

// minRequests is how many canary requests the guardrails need.
func minRequests(c *experiment.Canary) float64 {
	if c.Guardrails.MinRequests > 0 {
		return float64(c.Guardrails.MinRequests)
	}
	return 50
}

// canaryRequests is how many requests the canary has served in this
// experiment.
func (l *Lab) canaryRequests(ctx context.Context, domain string, d Domain) (float64, error) {
	h, err := l.o.Store.Counters(ctx, experimentHealthKey(domain, d.Exp.ID()))
	return h[d.Exp.Canary.Version+".requests"], err
}

// judged reports whether the guardrails have had the data they need.
func (l *Lab) judged(ctx context.Context, domain string, d Domain) bool {
	n, err := l.canaryRequests(ctx, domain, d)
	return err == nil && n >= minRequests(d.Exp.Canary)
}

// guardrails returns why the canary fails, or "".
func (l *Lab) guardrails(ctx context.Context, domain string, d Domain) (string, error) {
	c := d.Exp.Canary
	g := c.Guardrails
	maxErr, maxP99, alpha, minReq := g.MaxErrorRate, g.MaxP99.Duration, guardAlpha(g), minRequests(c)
	if maxErr == 0 {
		maxErr = 0.02
	}
	if maxP99 == 0 {
		maxP99 = 250 * time.Millisecond
	}
	h, err := l.o.Store.Counters(ctx, experimentHealthKey(domain, d.Exp.ID()))
	if err != nil {
		return "", err
	}
	v := c.Version
	if req := h[v+".requests"]; req >= minReq {
		if rate := h[v+".errors"] / req; rate > maxErr {
			return fmt.Sprintf("error rate %.1f%% over %.0f requests is above %.1f%%", 100*rate, req, 100*maxErr), nil
		}
		if p99 := quantile(latencies(h, v), 0.99); p99 > float64(maxP99.Milliseconds()) {
			return fmt.Sprintf("p99 latency %.0f ms is above %v", p99, maxP99), nil
		}
	}
	canary, err := l.o.Store.Group(ctx, groupKey(domain, d.Exp.ID(), "canary"))
	if err != nil {
		return "", err
	}
	control, err := l.o.Store.Group(ctx, groupKey(domain, d.Exp.ID(), "control"))
	if err != nil {
		return "", err
	}
	reason, _ := Guard(control, canary, alpha, g.Drop)
	return reason, nil
}

// guardAlpha is the guardrails' alpha, with its default.
func guardAlpha(g experiment.Guardrails) float64 {
	if g.Alpha == 0 {
		return 0.01
	}
	return g.Alpha
}

// The metrics a canary is guarded on, besides errors and latency.
var guarded = []struct {
	key, name string
	metric    stats.Metric
}{
	{"ctr", "CTR", ctr},
	// Per impression, not per user: as a canary steps up, users move from
	// control to canary, and a per-user sum would count them for less
	// time in the canary.
	{"revenue_per_impression", "revenue per impression", stats.Metric{Num: stats.Revenue, Den: stats.Imps}},
}

// Guard returns why a canary's outcomes fail against the control's, or "",
// and each metric's always-valid p-value against a drop.
// Each guarded metric (CTR, revenue per impression) has an always-valid test
// against a drop (stats.DropAlwaysValidP) at alpha / 2, its mixture scaled
// to a relative drop of drop (default 0.2) on the control's value: so
// looking at every refresh, for as long as the canary runs, rolls a healthy
// canary back with a chance of at most alpha in all.
func Guard(control, canary stats.Sums, alpha, drop float64) (string, map[string]float64) {
	if drop == 0 {
		drop = DefaultDrop
	}
	level := alpha / float64(len(guarded))
	reason, ps := "", map[string]float64{}
	// The normal approximation needs data: a canary with a handful of
	// impressions and no click yet has a variance estimate of 0, and would
	// look significantly worse. Wait for enough users in both groups and
	// for as many canary impressions as make minExpectedClicks at the
	// control's CTR.
	if control.Users < minGuardUsers || canary.Users < minGuardUsers || canary.S[stats.Imps]*ctr.Value(control) < minExpectedClicks {
		return "", ps
	}
	for _, g := range guarded {
		c, k := g.metric.Estimate(control), g.metric.Estimate(canary)
		if !(c.Value > 0) {
			continue
		}
		d := stats.Difference(c, k)
		tau := drop * c.Value
		p := stats.DropAlwaysValidP(d.Value, d.Var, tau*tau)
		if math.IsNaN(p) {
			continue
		}
		ps[g.key] = p
		if p < level && reason == "" {
			reason = fmt.Sprintf("%s %.4g is below production's %.4g (always-valid p %.2g < %g)", g.name, k.Value, c.Value, p, level)
		}
	}
	return reason, ps
}

// What the CTR and revenue guardrails wait for (see Guard).
const (
	minGuardUsers     = 30
	minExpectedClicks = 50
)

// DefaultDrop is the relative drop of a guarded metric that the canary's
// tests are tuned to catch soonest.
const DefaultDrop = 0.2

func latencies(h map[string]float64, version string) []float64 {
	out := make([]float64, len(latencyEdges))
	for i := range out {
		out[i] = h[fmt.Sprintf("%s.lat.%d", version, i)]
	}
	return out
}

// RollbackCanary stops the domain's canary by hand.
func (l *Lab) RollbackCanary(ctx context.Context, domain string, d Domain, reason string) error {
	if d.Exp == nil || d.Exp.Canary == nil {
		return ErrNoCanary
	}
	if strings.TrimSpace(reason) == "" {
		reason = "rolled back by hand"
	}
	for range 10 {
		st, raw, err := l.loadCanary(ctx, domain, d.Exp.Canary)
		if err != nil {
			return err
		}
		st.State, st.Reason = CanaryRolledBack, reason
		ok, err := l.swapCanary(ctx, domain, raw, st)
		if err != nil {
			return err
		}
		if ok {
			l.mu.Lock()
			l.canary[domain] = st
			l.mu.Unlock()
			l.o.Log.Warn("canary rolled back", "domain", domain, "version", d.Exp.Canary.Version, "reason", reason)
			return nil
		}
	}
	return errors.New("canary state kept changing; try again")
}

// PromoteCanary makes the canary version production: the experiment
// document is rewritten with production set and the canary removed.
func (l *Lab) PromoteCanary(ctx context.Context, domain string, d Domain) (string, error) {
	if d.Exp == nil || d.Exp.Canary == nil {
		return "", ErrNoCanary
	}
	if l.o.SetExperiment == nil {
		return "", errors.New("this router cannot write experiment documents")
	}
	// Only a canary that has been judged healthy all the way is promoted:
	// not one rolled back, and not one still stepping up.
	c := d.Exp.Canary
	st, _, err := l.loadCanary(ctx, domain, c)
	if err != nil {
		return "", err
	}
	switch st.State {
	case CanaryRolledBack:
		return "", fmt.Errorf("%w: it was rolled back (%s); start a new canary", ErrNotPromotable, st.Reason)
	case CanaryRunning:
		n, err := l.canaryRequests(ctx, domain, d)
		if err != nil {
			return "", err
		}
		last := st.Step == len(c.Steps)-1
		if !last || n < minRequests(c) || l.o.Now().Sub(st.StepStarted) < c.StepInterval.Duration {
			return "", fmt.Errorf("%w: it is at step %d of %d (%g%%) with %.0f of the %.0f requests its guardrails need; promote it once it has passed its last step",
				ErrNotPromotable, st.Step+1, len(c.Steps), c.Steps[st.Step], n, minRequests(c))
		}
	}
	var doc map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(d.ExpRaw))
	if err := dec.Decode(&doc); err != nil {
		return "", err
	}
	v := c.Version
	delete(doc, "canary")
	doc["production"], _ = json.Marshal(v)
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", err
	}
	if err := l.o.SetExperiment(ctx, domain, out); err != nil {
		return "", err
	}
	l.o.Log.Info("canary promoted", "domain", domain, "version", v)
	return v, nil
}

// ErrNoCanary is returned when the domain has no canary.
var ErrNoCanary = errors.New("the domain's experiment has no canary")

// ErrNotPromotable is returned for a canary that may not be promoted yet,
// or ever.
var ErrNotPromotable = errors.New("the canary cannot be promoted")

// CanaryShare is the percent of domain's users canary c has now, and
// whether it was rolled back (the edge plan carries it to devices).
func (l *Lab) CanaryShare(domain string, c *experiment.Canary) (float64, bool) {
	st := l.canaryState(domain, c)
	return st.share(c), st.State == CanaryRolledBack
}
