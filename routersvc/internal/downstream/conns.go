package downstream

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"

	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/grpcx"
)

// Conns lazily dials one ClientConn per resolver key (a service, or a
// domain's ranker version) and closes them all on Close.
type Conns struct {
	res  *discovery.Resolver
	opts []grpc.DialOption

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// NewConns dials through res, with opts after adrank's own (TLS, say).
func NewConns(res *discovery.Resolver, opts ...grpc.DialOption) *Conns {
	return &Conns{res: res, opts: opts, conns: map[string]*grpc.ClientConn{}}
}

// Get returns the connection for key, dialling it on first use.
func (c *Conns) Get(key string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("connections closed")
	}
	if cc, ok := c.conns[key]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(discovery.Target(key), grpcx.ClientOptions(append([]grpc.DialOption{grpc.WithResolvers(c.res)}, c.opts...)...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", key, err)
	}
	c.conns[key] = cc
	return cc, nil
}

// Close closes every connection.
func (c *Conns) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}
