package downstream

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	auctioninproc "github.com/adrank/adrank/auctionsvc/inproc"
	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/platform/consulx"
	"github.com/adrank/adrank/platform/discovery"
	"github.com/adrank/adrank/platform/experiment"
	"github.com/adrank/adrank/platform/kvconfig"
	"github.com/adrank/adrank/routersvc/internal/routing"
)

// Consul follows the catalog and KV and gives the router its downstream
// clients (Clients). Run owns the watch goroutines.
type Consul struct {
	client *api.Client
	log    *slog.Logger
	res    *discovery.Resolver
	conns  *Conns
	Table  *routing.Table
	// Auctions checks the auction configs as auctionsvc does (their errors
	// show in ListDomains).
	Auctions *auctioninproc.Auction
	// features are featuresvc's healthy instances, each also resolvable
	// alone (instanceKey), for what every instance must hear.
	features atomic.Pointer[[]string]
}

// instanceKey is the resolver key of one instance of a service (a target
// path: no "#" or "?").
func instanceKey(service, addr string) string { return service + "@" + addr }

// NewConsul returns Consul-found Clients and a routing table; opts are
// more dial options (TLS, say).
func NewConsul(client *api.Client, log *slog.Logger, opts ...grpc.DialOption) *Consul {
	res := discovery.NewResolver()
	return &Consul{
		client:   client,
		log:      log,
		res:      res,
		conns:    NewConns(res, opts...),
		Table:    routing.NewTable(log, res.Update),
		Auctions: auctioninproc.New(log),
	}
}

// Run watches Consul until ctx ends, then closes the connections.
func (c *Consul) Run(ctx context.Context) error {
	defer c.conns.Close()
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range []string{consulx.FeatureService, consulx.AuctionService} {
		g.Go(func() error {
			discovery.WatchService(ctx, c.client, c.log, name, func(insts []discovery.Instance) {
				addrs := healthyAddrs(insts)
				c.res.Update(name, addrs)
				if name == consulx.FeatureService {
					for _, a := range addrs {
						c.res.Update(instanceKey(name, a), []string{a})
					}
					if before := c.features.Swap(&addrs); before != nil {
						for _, a := range *before {
							if !slices.Contains(addrs, a) { // gone: its connection stops dialling
								c.res.Update(instanceKey(name, a), nil)
							}
						}
					}
				}
			})
			return nil
		})
	}
	g.Go(func() error {
		discovery.WatchService(ctx, c.client, c.log, consulx.RankerService, c.Table.SetRankers)
		return nil
	})
	g.Go(func() error { return WatchConfigs(ctx, c.client, c.log, c.Table, c.Auctions, nil) })
	return g.Wait()
}

// WatchConfigs follows the domain configs and experiments in Consul KV into
// table, and the auction configs into auctions (which checks them as
// auctionsvc does, so that their errors show in ListDomains) and, when
// auction is not nil, into it, until ctx ends.
func WatchConfigs(ctx context.Context, client *api.Client, log *slog.Logger, table *routing.Table, auctions *auctioninproc.Auction, auction func(api.KVPairs)) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		discovery.WatchPrefix(ctx, client, log, routing.ConfigPrefix, func(pairs api.KVPairs) {
			table.SetConfigs(kvconfig.Names(routing.ConfigPrefix, pairs))
		})
		return nil
	})
	g.Go(func() error {
		discovery.WatchPrefix(ctx, client, log, experiment.Prefix, func(pairs api.KVPairs) {
			table.SetExperiments(kvconfig.Names(experiment.Prefix, pairs))
		})
		return nil
	})
	g.Go(func() error {
		discovery.WatchPrefix(ctx, client, log, auctioninproc.ConfigPrefix, func(pairs api.KVPairs) {
			auctions.SetConfigs(pairs)
			if auction != nil {
				auction(pairs)
			}
		})
		return nil
	})
	return g.Wait()
}

func healthyAddrs(insts []discovery.Instance) []string {
	var out []string
	for _, in := range insts {
		if in.Healthy {
			out = append(out, in.Addr)
		}
	}
	return out
}

// Features implements Clients.
func (c *Consul) Features() (featuresv1.FeatureServiceClient, error) {
	cc, err := c.conns.Get(consulx.FeatureService)
	if err != nil {
		return nil, err
	}
	return featuresv1.NewFeatureServiceClient(cc), nil
}

// FeatureInstances returns a client of each healthy featuresvc instance:
// the real-time counters' activity goes to every one, as each keeps its own.
func (c *Consul) FeatureInstances() ([]featuresv1.FeatureServiceClient, error) {
	addrs := c.features.Load()
	if addrs == nil || len(*addrs) == 0 {
		return nil, errors.New("no healthy featuresvc instance")
	}
	var out []featuresv1.FeatureServiceClient
	for _, a := range *addrs {
		cc, err := c.conns.Get(instanceKey(consulx.FeatureService, a))
		if err != nil {
			return nil, err
		}
		out = append(out, featuresv1.NewFeatureServiceClient(cc))
	}
	return out, nil
}

// Auction implements Clients.
func (c *Consul) Auction() (auctionv1.AuctionServiceClient, error) {
	cc, err := c.conns.Get(consulx.AuctionService)
	if err != nil {
		return nil, err
	}
	return auctionv1.NewAuctionServiceClient(cc), nil
}

// Ranker implements Clients.
func (c *Consul) Ranker(domain, version string) (rankerv1.RankerServiceClient, error) {
	cc, err := c.conns.Get(routing.RankerKey(domain, version))
	if err != nil {
		return nil, err
	}
	return rankerv1.NewRankerServiceClient(cc), nil
}

// PutExperiment returns a writer of domains' experiment documents to Consul
// KV (lab.Options.SetExperiment: canary promotion).
func PutExperiment(client *api.Client) func(ctx context.Context, domain string, doc []byte) error {
	return func(ctx context.Context, domain string, doc []byte) error {
		_, err := client.KV().Put(&api.KVPair{Key: experiment.Prefix + domain, Value: doc}, (&api.WriteOptions{}).WithContext(ctx))
		return err
	}
}

// AuctionConfigs reads a domain's auction config document from Consul KV
// (adrank/auction/<domain>; nil when there is none), for edge plans.
func AuctionConfigs(client *api.Client) func(ctx context.Context, domain string) ([]byte, error) {
	return func(ctx context.Context, domain string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		kv, _, err := client.KV().Get("adrank/auction/"+domain, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil || kv == nil {
			return nil, err
		}
		return kv.Value, nil
	}
}
