// Package discovery follows Consul through cancellable blocking queries and
// feeds what it finds to gRPC through a resolver.
package discovery

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
)

// Instance is one registered service instance.
type Instance struct {
	ID      string
	Service string
	Addr    string // host:port
	Healthy bool   // every check passing
	Tags    []string
	Meta    map[string]string
}

// Consul is the part of the Consul API discovery uses.
type Consul interface {
	Health() *api.Health
	KV() *api.KV
}

// WaitTime bounds one blocking query.
const WaitTime = 30 * time.Second

// RecoveryHold is how long a watch keeps the last known state after Consul
// answers again following an outage. A restarted agent answers before it has
// settled: in probes here it listed a service with no instances at first,
// then restored every check as critical until the check's first run, which
// comes within one check interval (adrank's are 1 s; the hold covers
// intervals up to its length).
const RecoveryHold = 5 * time.Second

// block runs blocking queries with fetch until ctx ends, calling onChange
// with each new result. The sanity rules are Consul's: an index that goes
// backwards resets to 0, and a zero index is never waited on. On errors it
// backs off (100 ms doubling to 5 s), keeps the last result, so a Consul
// outage leaves callers with the last known state, and once Consul answers
// again it keeps that state RecoveryHold longer, then starts over from index
// 0.
func block[T any](ctx context.Context, log *slog.Logger, what string, fetch func(*api.QueryOptions) (T, *api.QueryMeta, error), onChange func(T)) {
	var index uint64
	backoff := 100 * time.Millisecond
	failing := false
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: WaitTime}).WithContext(ctx)
		v, meta, err := fetch(q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				log.WarnContext(ctx, "consul query failed; keeping last known state", "watch", what, "error", err)
				failing = true
			}
			// The agent may come back with a lower index (a restarted dev
			// agent starts over); blocking on the old one would stall the
			// watch for a whole WaitTime.
			index = 0
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		if failing {
			log.InfoContext(ctx, "consul query recovered; keeping the last known state while the agent settles", "watch", what, "hold", RecoveryHold.String())
			failing = false
			if !sleep(ctx, RecoveryHold) {
				return
			}
			index = 0
			continue
		}
		backoff = 100 * time.Millisecond
		heard(ctx, what)
		next := meta.LastIndex
		if next < index {
			next = 0
		}
		if next != index || index == 0 {
			onChange(v)
		}
		if next == 0 {
			// Never block on index 0; pace the loop instead.
			if !sleep(ctx, 100*time.Millisecond) {
				return
			}
		}
		index = next
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// WatchService calls onChange with every instance of service (healthy or
// not) each time the set changes, until ctx ends.
func WatchService(ctx context.Context, c Consul, log *slog.Logger, service string, onChange func([]Instance)) {
	block(ctx, log, "service "+service, func(q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
		return c.Health().Service(service, "", false, q)
	}, func(entries []*api.ServiceEntry) {
		onChange(instances(entries))
	})
}

func instances(entries []*api.ServiceEntry) []Instance {
	out := make([]Instance, 0, len(entries))
	for _, e := range entries {
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		out = append(out, Instance{
			ID:      e.Service.ID,
			Service: e.Service.Service,
			Addr:    net.JoinHostPort(host, strconv.Itoa(e.Service.Port)),
			Healthy: e.Checks.AggregatedStatus() == api.HealthPassing,
			Tags:    e.Service.Tags,
			Meta:    e.Service.Meta,
		})
	}
	return out
}

// WatchPrefix calls onChange with every KV pair under prefix each time any
// of them changes, until ctx ends.
func WatchPrefix(ctx context.Context, c Consul, log *slog.Logger, prefix string, onChange func(api.KVPairs)) {
	block(ctx, log, "kv "+prefix, func(q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
		return c.KV().List(prefix, q)
	}, onChange)
}
