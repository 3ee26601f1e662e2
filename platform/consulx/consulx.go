// Package consulx registers adrank service instances in Consul and keeps them
// registered.
package consulx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Service names in Consul.
const (
	FeatureService = "adrank-feature"
	RankerService  = "adrank-ranker"
	AuctionService = "adrank-auction"
	RouterService  = "adrank-router"
)

// Ranker metadata keys.
const (
	MetaDomain      = "domain"
	MetaVersion     = "version"
	MetaModelSHA256 = "model_sha256"
	MetaModelFormat = "model_format"
)

// NewClient returns a Consul API client for addr (host:port); empty addr
// means the API's defaults, which honour CONSUL_HTTP_ADDR.
func NewClient(addr string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if addr != "" {
		cfg.Address = addr
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	return c, nil
}

// Registration describes one service instance.
type Registration struct {
	Name string
	Addr string // host:port the instance serves gRPC on
	Tags []string
	Meta map[string]string
	// CheckInterval is how often Consul runs the gRPC health check; it bounds
	// how fast a lost instance leaves routing. Default 1s.
	CheckInterval time.Duration
	// DeregisterAfter removes an instance whose check stays critical this
	// long. Default 1m (Consul's minimum).
	DeregisterAfter time.Duration
	// TLS: the instance serves TLS only. The agent's check then speaks TLS
	// without verifying the certificate: the agent holds no adrank CA, and
	// the check reads nothing but the health status.
	TLS bool
}

// ID is the instance's stable ID: name and address.
func (r Registration) ID() string { return r.Name + "-" + r.Addr }

func (r Registration) agentService() (*api.AgentServiceRegistration, error) {
	host, portStr, err := net.SplitHostPort(r.Addr)
	if err != nil {
		return nil, fmt.Errorf("registration address %q: %w", r.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("registration port %q: %w", portStr, err)
	}
	interval, deregister := r.CheckInterval, r.DeregisterAfter
	if interval <= 0 {
		interval = time.Second
	}
	if deregister <= 0 {
		deregister = time.Minute
	}
	return &api.AgentServiceRegistration{
		ID:      r.ID(),
		Name:    r.Name,
		Address: host,
		Port:    port,
		Tags:    r.Tags,
		Meta:    r.Meta,
		Check: &api.AgentServiceCheck{
			CheckID:                        r.ID() + "-grpc",
			Name:                           "gRPC health",
			GRPC:                           r.Addr,
			Interval:                       interval.String(),
			Timeout:                        interval.String(),
			DeregisterCriticalServiceAfter: deregister.String(),
			GRPCUseTLS:                     r.TLS,
			TLSSkipVerify:                  r.TLS,
		},
	}, nil
}

// Registrar keeps one instance registered with the local agent.
type Registrar struct {
	client *api.Client
	reg    Registration
	log    *slog.Logger
	// Every is how often it checks that the agent still knows the instance.
	Every time.Duration

	// mu orders Run's check-and-register against Deregister: once
	// deregistered, Run never registers the instance again, even if its
	// ticker fires a moment later.
	mu           sync.Mutex
	deregistered bool
}

// NewRegistrar returns a Registrar for reg.
func NewRegistrar(client *api.Client, reg Registration, log *slog.Logger) *Registrar {
	return &Registrar{client: client, reg: reg, log: log, Every: 2 * time.Second}
}

// callTimeout bounds each call to the local agent.
const callTimeout = 5 * time.Second

// Register registers the instance once.
func (r *Registrar) Register(ctx context.Context) error {
	svc, err := r.reg.agentService()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := r.client.Agent().ServiceRegisterOpts(svc, opts); err != nil {
		return fmt.Errorf("register %s: %w", r.reg.ID(), err)
	}
	return nil
}

// Run registers the instance, then re-registers it whenever the agent has
// forgotten it (an agent restart loses a dev agent's state), until ctx ends.
// Consul being down is logged, never fatal: the instance keeps serving.
func (r *Registrar) Run(ctx context.Context) error {
	registered := false
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		if err := r.ensure(ctx, &registered); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.log.WarnContext(ctx, "consul registration failed; will retry", "id", r.reg.ID(), "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ensure registers the instance unless the agent already has it or it has
// been deregistered.
func (r *Registrar) ensure(ctx context.Context, registered *bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deregistered || (*registered && r.known(ctx)) {
		return nil
	}
	if err := r.Register(ctx); err != nil {
		return err
	}
	if *registered {
		r.log.InfoContext(ctx, "re-registered in consul", "id", r.reg.ID())
	} else {
		r.log.InfoContext(ctx, "registered in consul", "id", r.reg.ID(), "name", r.reg.Name)
	}
	*registered = true
	return nil
}

// known reports whether the agent has the instance. An error other than
// "not found" counts as known, so an unreachable agent causes no churn.
func (r *Registrar) known(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, _, err := r.client.Agent().Service(r.reg.ID(), (&api.QueryOptions{}).WithContext(ctx))
	if err == nil {
		return true
	}
	var se api.StatusError
	if errors.As(err, &se) && se.Code == 404 {
		return false
	}
	return true
}

// Deregister removes the instance from the agent; a Run still going will not
// register it again.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deregistered = true
	opts := (&api.QueryOptions{}).WithContext(ctx)
	if err := r.client.Agent().ServiceDeregisterOpts(r.reg.ID(), opts); err != nil {
		return fmt.Errorf("deregister %s: %w", r.reg.ID(), err)
	}
	return nil
}
