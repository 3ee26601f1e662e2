package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protojson"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

// pool holds distinct requests built up front, so that the load generator,
// which shares the machine with the services, spends its CPU on sending, not
// on building requests. Every call still gets a request ID of its own.
type pool struct {
	reqs []*routerv1.RankRequest
	// json[i] is reqs[i] as REST JSON, split around its request ID.
	json [][2][]byte
	next atomic.Uint64

	mu       sync.Mutex
	streamed map[int]bool // the requests sent through the stream
}

// mark notes that request i went through the stream.
func (p *pool) mark(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.streamed == nil {
		p.streamed = map[int]bool{}
	}
	p.streamed[i] = true
}

// taken lists the requests that went through the stream.
func (p *pool) taken() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int, 0, len(p.streamed))
	for i := range p.streamed {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

const idMark = "@ID@"

func newPool(seed uint64, n int) (*pool, error) {
	rng := rand.New(rand.NewPCG(seed, 3))
	p := &pool{}
	for k := range n {
		r := request(rng, k)
		r.RequestId = idMark
		js, err := protojson.Marshal(r)
		if err != nil {
			return nil, err
		}
		before, after, ok := bytes.Cut(js, []byte(idMark))
		if !ok {
			return nil, fmt.Errorf("request JSON lacks its ID mark: %s", js)
		}
		p.reqs = append(p.reqs, r)
		p.json = append(p.json, [2][]byte{before, after})
	}
	return p, nil
}

func (p *pool) take() (int, string) {
	n := p.next.Add(1)
	return int(n % uint64(len(p.reqs))), "bench-" + strconv.FormatUint(n, 10)
}

// rank returns the next request under a new ID. It shares the pooled
// candidates, which the gRPC marshaller only reads.
func (p *pool) rank() *routerv1.RankRequest {
	i, id := p.take()
	r := p.reqs[i]
	return &routerv1.RankRequest{RequestId: id, UserId: r.GetUserId(), Domain: r.GetDomain(), Slots: r.GetSlots(), Context: r.GetContext(), Candidates: r.GetCandidates()}
}

// body returns the next request as REST JSON under a new ID.
func (p *pool) body() []byte {
	i, id := p.take()
	j := p.json[i]
	b := make([]byte, 0, len(j[0])+len(id)+len(j[1]))
	return append(append(append(b, j[0]...), id...), j[1]...)
}
