// Package inproc is auctionsvc's API for use in process: the same auction
// and config handling as the service, called as functions (no network hop).
// A process that serves every model itself (routersvc --ml-service, the
// adrank library) links it instead of calling auctionsvc.
package inproc

import (
	"log/slog"

	"github.com/adrank/adrank/auctionsvc/internal/config"
	"github.com/adrank/adrank/auctionsvc/internal/server"
)

// ConfigPrefix is the Consul KV prefix of the domains' auction configs.
const ConfigPrefix = config.Prefix

// Auction is AuctionService in process: RunAuction, and SetConfigs with
// the KV pairs under ConfigPrefix.
type Auction = server.Server

// New returns an auction with no domain configs yet (every domain: GSP).
func New(log *slog.Logger) *Auction { return server.New(log) }
