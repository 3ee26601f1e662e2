package downstream

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	auctioninproc "github.com/adrank/adrank/auctionsvc/inproc"
	featuresinproc "github.com/adrank/adrank/featuresvc/inproc"
	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/ml/world"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/discovery"
	rankerinproc "github.com/adrank/adrank/rankersvc/inproc"
)

// Local runs featuresvc, the rankers and the auction inside this process:
// the same service code, called directly, with no network hop and no
// Consul. It is the downstream of ML as one service and of the library.
type Local struct {
	features featuresv1.FeatureServiceServer
	auction  *auctioninproc.Auction

	mu      sync.RWMutex
	rankers map[string]rankerv1.RankerServiceServer // domain/version
}

// NewLocal serves world w's features and a GSP auction; add rankers with
// AddRanker.
func NewLocal(w *world.World, log *slog.Logger) *Local {
	return &Local{features: featuresinproc.New(w), auction: auctioninproc.New(log), rankers: map[string]rankerv1.RankerServiceServer{}}
}

// AddRanker serves model file f as domain/version.
func (p *Local) AddRanker(domain, version string, f *model.File) {
	p.SetRanker(domain, version, rankerinproc.New(domain, version, f))
}

// SetRanker serves domain/version with any implementation (tests wrap one
// to inject faults).
func (p *Local) SetRanker(domain, version string, s rankerv1.RankerServiceServer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rankers[domain+"/"+version] = s
}

// SetAuctionConfigs sets auction configs as if read from Consul KV.
func (p *Local) SetAuctionConfigs(pairs api.KVPairs) { p.auction.SetConfigs(pairs) }

// Instances lists the rankers as healthy registrations, for a routing table.
func (p *Local) Instances() []discovery.Instance {
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

// Features implements Clients.
func (p *Local) Features() (featuresv1.FeatureServiceClient, error) {
	return featuresClient{p.features}, nil
}

// Auction implements Clients.
func (p *Local) Auction() (auctionv1.AuctionServiceClient, error) {
	return auctionClient{p.auction}, nil
}

// Ranker implements Clients.
func (p *Local) Ranker(domain, version string) (rankerv1.RankerServiceClient, error) {
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

func (c featuresClient) BatchGetFeatures(ctx context.Context, in *featuresv1.BatchGetFeaturesRequest, _ ...grpc.CallOption) (*featuresv1.BatchGetFeaturesResponse, error) {
	return c.s.BatchGetFeatures(ctx, in)
}

func (c featuresClient) GetFeatures(ctx context.Context, in *featuresv1.GetFeaturesRequest, _ ...grpc.CallOption) (*featuresv1.GetFeaturesResponse, error) {
	return c.s.GetFeatures(ctx, in)
}

func (c featuresClient) PutFeatures(ctx context.Context, in *featuresv1.PutFeaturesRequest, _ ...grpc.CallOption) (*featuresv1.PutFeaturesResponse, error) {
	return c.s.PutFeatures(ctx, in)
}

func (c featuresClient) GetFeatureStatus(ctx context.Context, in *featuresv1.GetFeatureStatusRequest, _ ...grpc.CallOption) (*featuresv1.GetFeatureStatusResponse, error) {
	return c.s.GetFeatureStatus(ctx, in)
}

func (c featuresClient) RecordActivity(ctx context.Context, in *featuresv1.RecordActivityRequest, _ ...grpc.CallOption) (*featuresv1.RecordActivityResponse, error) {
	return c.s.RecordActivity(ctx, in)
}

// LoadSnapshot is featuresvc's alone: a process serving the synthetic world
// itself has no store to load.
func (c featuresClient) LoadSnapshot(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[featuresv1.LoadSnapshotRequest, featuresv1.LoadSnapshotResponse], error) {
	return nil, status.Error(codes.Unimplemented, "LoadSnapshot: this process serves the synthetic world in process; load snapshots into featuresvc")
}

type auctionClient struct {
	s auctionv1.AuctionServiceServer
}

func (c auctionClient) BatchRunAuction(ctx context.Context, in *auctionv1.BatchRunAuctionRequest, _ ...grpc.CallOption) (*auctionv1.BatchRunAuctionResponse, error) {
	return c.s.BatchRunAuction(ctx, in)
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
