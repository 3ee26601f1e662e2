// Package inproc runs featuresvc, the rankers and the auction inside the
// router's process: the same service code, called directly, with no network
// hop and no Consul. The simulator's tests use it, and so can a monolith
// deployment.
package inproc

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"

	"github.com/adrank/adrank/auctionsvc/server"
	"github.com/adrank/adrank/featuresvc/features"
	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/rankersvc/ranker"
)

// Pipeline is an in-process Downstream.
type Pipeline struct {
	features *features.Server
	auction  *server.Server

	mu      sync.RWMutex
	rankers map[string]rankerv1.RankerServiceServer // domain/version
}

// New serves world w's features and a GSP auction; add rankers with
// AddRanker.
func New(w *world.World, log *slog.Logger) *Pipeline {
	return &Pipeline{features: features.NewServer(w), auction: server.New(log), rankers: map[string]rankerv1.RankerServiceServer{}}
}

// AddRanker serves model file f as domain/version.
func (p *Pipeline) AddRanker(domain, version string, f *model.File) {
	p.SetRanker(domain, version, ranker.NewServer(domain, version, f))
}

// SetRanker serves domain/version with any implementation (tests wrap one
// to inject faults).
func (p *Pipeline) SetRanker(domain, version string, s rankerv1.RankerServiceServer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rankers[domain+"/"+version] = s
}

// SetAuctionConfigs sets auction configs as if read from Consul KV.
func (p *Pipeline) SetAuctionConfigs(pairs api.KVPairs) { p.auction.SetConfigs(pairs) }

// Instances lists the rankers as healthy registrations, for a routing table.
func (p *Pipeline) Instances() []discovery.Instance {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []discovery.Instance
	for key := range p.rankers {
		var domain, version string
		for i := range key {
			if key[i] == '/' {
				domain, version = key[:i], key[i+1:]
				break
			}
		}
		out = append(out, discovery.Instance{ID: "inproc-" + key, Addr: "inproc", Healthy: true,
			Meta: map[string]string{consulx.MetaDomain: domain, consulx.MetaVersion: version}})
	}
	return out
}

// Features implements router.Downstream.
func (p *Pipeline) Features() (featuresv1.FeatureServiceClient, error) {
	return featuresClient{p.features}, nil
}

// Auction implements router.Downstream.
func (p *Pipeline) Auction() (auctionv1.AuctionServiceClient, error) {
	return auctionClient{p.auction}, nil
}

// Ranker implements router.Downstream.
func (p *Pipeline) Ranker(domain, version string) (rankerv1.RankerServiceClient, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	s, ok := p.rankers[domain+"/"+version]
	if !ok {
		return nil, fmt.Errorf("no ranker %s/%s in this process", domain, version)
	}
	return rankerClient{s}, nil
}

type featuresClient struct {
	s featuresv1.FeatureServiceServer
}

func (c featuresClient) GetFeatures(ctx context.Context, in *featuresv1.GetFeaturesRequest, _ ...grpc.CallOption) (*featuresv1.GetFeaturesResponse, error) {
	return c.s.GetFeatures(ctx, in)
}

type auctionClient struct {
	s auctionv1.AuctionServiceServer
}

func (c auctionClient) RunAuction(ctx context.Context, in *auctionv1.RunAuctionRequest, _ ...grpc.CallOption) (*auctionv1.RunAuctionResponse, error) {
	return c.s.RunAuction(ctx, in)
}

type rankerClient struct{ s rankerv1.RankerServiceServer }

func (c rankerClient) Score(ctx context.Context, in *rankerv1.ScoreRequest, _ ...grpc.CallOption) (*rankerv1.ScoreResponse, error) {
	return c.s.Score(ctx, in)
}

func (c rankerClient) GetModelInfo(ctx context.Context, in *rankerv1.GetModelInfoRequest, _ ...grpc.CallOption) (*rankerv1.GetModelInfoResponse, error) {
	return c.s.GetModelInfo(ctx, in)
}
