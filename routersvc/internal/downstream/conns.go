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
	res *discovery.Resolver

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// NewConns dials through res.
func NewConns(res *discovery.Resolver) *Conns {
	return &Conns{res: res, conns: map[string]*grpc.ClientConn{}}
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
	cc, err := grpc.NewClient(discovery.Target(key), grpcx.ClientOptions(grpc.WithResolvers(c.res))...)
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
