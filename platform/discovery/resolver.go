package discovery

import (
	"net"
	"slices"
	"sync"

	"google.golang.org/grpc/resolver"
)

// Scheme is the target scheme of adrank's resolver: "adrank:///<key>".
const Scheme = "adrank"

// Target is the gRPC target for key.
func Target(key string) string { return Scheme + ":///" + key }

// Resolver is a resolver.Builder whose address sets are pushed to it by a
// watcher: Update(key, addrs) reaches every ClientConn dialled to
// Target(key). Pass it per connection with grpc.WithResolvers; it is never
// registered globally.
type Resolver struct {
	mu    sync.Mutex
	addrs map[string][]string
	conns map[string]map[*conn]struct{}
}

// NewResolver returns an empty Resolver.
func NewResolver() *Resolver {
	return &Resolver{addrs: map[string][]string{}, conns: map[string]map[*conn]struct{}{}}
}

// Scheme implements resolver.Builder.
func (r *Resolver) Scheme() string { return Scheme }

// Build implements resolver.Builder.
func (r *Resolver) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	key := t.Endpoint()
	c := &conn{r: r, key: key, cc: cc}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns[key] == nil {
		r.conns[key] = map[*conn]struct{}{}
	}
	r.conns[key][c] = struct{}{}
	c.push(r.addrs[key])
	return c, nil
}

// Update sets the addresses of key. Unchanged sets are not pushed again.
func (r *Resolver) Update(key string, addrs []string) {
	addrs = slices.Clone(addrs)
	slices.Sort(addrs)
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.addrs[key]; ok && slices.Equal(old, addrs) {
		return
	}
	r.addrs[key] = addrs
	for c := range r.conns[key] {
		c.push(addrs)
	}
}

// Addrs returns the current addresses of key.
func (r *Resolver) Addrs(key string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.addrs[key])
}

type conn struct {
	r   *Resolver
	key string
	cc  resolver.ClientConn
}

// push is called with r.mu held. An empty set is pushed too: the ClientConn
// then fails RPCs fast with UNAVAILABLE instead of using stale instances.
func (c *conn) push(addrs []string) {
	// Both forms: endpoint-aware balancers read Endpoints, and those built
	// on balancer/base (grpcx.BalancerName) read Addresses.
	state := resolver.State{Endpoints: make([]resolver.Endpoint, 0, len(addrs)), Addresses: make([]resolver.Address, 0, len(addrs))}
	for _, a := range addrs {
		// Over TLS, an instance's certificate is checked against its own
		// host (from Consul), not the target's service name.
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		ra := resolver.Address{Addr: a, ServerName: host}
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{ra}})
		state.Addresses = append(state.Addresses, ra)
	}
	_ = c.cc.UpdateState(state) // an error only asks for re-resolution, which Update does anyway
}

func (c *conn) ResolveNow(resolver.ResolveNowOptions) {}

func (c *conn) Close() {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	delete(c.r.conns[c.key], c)
}
