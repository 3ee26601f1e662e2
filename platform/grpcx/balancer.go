package grpcx

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
)

// BalancerName is the load balancing policy between adrank services (see
// ServiceConfig). Each call goes to the ready instance with the fewest calls
// in flight from this client, ties broken round robin, so a slow instance,
// whose calls pile up, gets fewer new ones. A call whose context carries
// Attempts avoids the instances that earlier attempts of the same logical
// call went to: a hedge or a retry goes elsewhere when there is elsewhere.
const BalancerName = "adrank_least_loaded"

func init() {
	// gRPC's balancer registry is process-wide and filled at init, as with
	// its own policies.
	balancer.Register(builder{})
}

// builder gives each ClientConn a base balancer with a picker builder of
// its own, so that in-flight counts are per connection and can be pruned.
type builder struct{}

func (builder) Name() string { return BalancerName }

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return base.NewBalancerBuilder(BalancerName, &pickerBuilder{}, base.Config{}).Build(cc, opts)
}

// Attempts records the instances that the attempts of one logical call
// were sent to. It is safe for concurrent use.
type Attempts struct {
	mu    sync.Mutex
	addrs []string
}

func (a *Attempts) add(addr string) {
	a.mu.Lock()
	a.addrs = append(a.addrs, addr)
	a.mu.Unlock()
}

func (a *Attempts) has(addr string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Contains(a.addrs, addr)
}

// Addrs returns the instances picked so far, in order.
func (a *Attempts) Addrs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.addrs)
}

type attemptsKey struct{}

// trackAttempts gives every outgoing call an Attempts of its own unless the
// caller gave one, so that gRPC's retries of UNAVAILABLE avoid the instance
// that failed.
func trackAttempts(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if _, ok := ctx.Value(attemptsKey{}).(*Attempts); !ok {
		ctx = WithAttempts(ctx, &Attempts{})
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// WithAttempts returns a context whose calls record their instances in a
// and avoid those already in it.
func WithAttempts(ctx context.Context, a *Attempts) context.Context {
	return context.WithValue(ctx, attemptsKey{}, a)
}

// pickerBuilder keeps one ClientConn's in-flight counts, which outlive each
// picker (one is built whenever an instance becomes ready or goes away).
type pickerBuilder struct {
	inflight sync.Map // balancer.SubConn -> *atomic.Int64
	next     atomic.Uint32
}

type instance struct {
	sc       balancer.SubConn
	addr     string
	inflight *atomic.Int64
}

func (b *pickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	if len(info.ReadySCs) == 0 {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	// Forget instances that are no longer ready and have nothing in flight,
	// so that instance churn does not grow the map.
	b.inflight.Range(func(k, v any) bool {
		if _, ready := info.ReadySCs[k.(balancer.SubConn)]; !ready && v.(*atomic.Int64).Load() == 0 {
			b.inflight.Delete(k)
		}
		return true
	})
	p := &picker{next: &b.next}
	for sc, sci := range info.ReadySCs {
		n, _ := b.inflight.LoadOrStore(sc, new(atomic.Int64))
		p.ready = append(p.ready, instance{sc: sc, addr: sci.Address.Addr, inflight: n.(*atomic.Int64)})
	}
	// A stable order, so that round robin means something across pickers.
	slices.SortFunc(p.ready, func(x, y instance) int {
		if x.addr < y.addr {
			return -1
		}
		if x.addr > y.addr {
			return 1
		}
		return 0
	})
	return p
}

type picker struct {
	ready []instance
	next  *atomic.Uint32
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	att, _ := info.Ctx.Value(attemptsKey{}).(*Attempts)
	start := int(p.next.Add(1))
	best := -1
	for pass := 0; pass < 2 && best < 0; pass++ {
		// The first pass skips instances earlier attempts used; the second,
		// when every instance was used, takes any.
		for k := range p.ready {
			i := (start + k) % len(p.ready)
			if pass == 0 && att != nil && att.has(p.ready[i].addr) {
				continue
			}
			if best < 0 || p.ready[i].inflight.Load() < p.ready[best].inflight.Load() {
				best = i
			}
		}
	}
	in := p.ready[best]
	if att != nil {
		att.add(in.addr)
	}
	in.inflight.Add(1)
	return balancer.PickResult{SubConn: in.sc, Done: func(balancer.DoneInfo) { in.inflight.Add(-1) }}, nil
}
