// Package router implements RouterService: it validates a request, then
// calls featuresvc, the domain's production ranker and the auction.
package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	auctionv1 "github.com/adrank/adrank/gen/adrank/auction/v1"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
	"github.com/adrank/adrank/platform/logging"
	"github.com/adrank/adrank/routersvc/internal/routing"
)

// Downstream gives the clients of the services the router calls.
type Downstream interface {
	Features() (featuresv1.FeatureServiceClient, error)
	Auction() (auctionv1.AuctionServiceClient, error)
	Ranker(domain, version string) (rankerv1.RankerServiceClient, error)
}

// Server implements RouterService.
type Server struct {
	routerv1.UnimplementedRouterServiceServer
	table  *routing.Table
	down   Downstream
	budget time.Duration
	log    *slog.Logger
}

// NewServer returns a router that answers within budget (or the caller's
// deadline, if sooner).
func NewServer(table *routing.Table, down Downstream, budget time.Duration, log *slog.Logger) *Server {
	return &Server{table: table, down: down, budget: budget, log: log}
}

// Rank implements RouterService.
func (s *Server) Rank(ctx context.Context, req *routerv1.RankRequest) (*routerv1.RankResponse, error) {
	if err := validate(req); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.budget)
	defer cancel()
	reqID := req.GetRequestId()
	if reqID == "" {
		reqID = logging.NewRequestID()
	}
	ctx = logging.WithRequestID(ctx, reqID)

	d, ok := s.table.Snapshot().Domains[req.GetDomain()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "domain %q is not known", req.GetDomain())
	}
	if d.Config == nil {
		return nil, status.Errorf(codes.Unavailable, "domain %q has no production version: set %s%s", d.Name, routing.ConfigPrefix, d.Name)
	}
	version := d.Config.Production
	if v := d.Production(); v == nil || v.Healthy == 0 {
		return nil, status.Errorf(codes.Unavailable, "domain %q: no healthy instance of production version %q", d.Name, version)
	}

	feats, err := s.features(ctx, req)
	if err != nil {
		return nil, err
	}
	pctrs, err := s.score(ctx, d.Name, version, feats)
	if err != nil {
		return nil, err
	}
	if len(pctrs) != len(req.GetCandidates()) {
		return nil, status.Errorf(codes.Internal, "ranker %s/%s returned %d scores for %d candidates", d.Name, version, len(pctrs), len(req.GetCandidates()))
	}
	auction, err := s.auction(ctx, req, pctrs)
	if err != nil {
		return nil, err
	}
	allocs := auction.GetAllocations()
	resp := &routerv1.RankResponse{RequestId: reqID, Domain: d.Name, ModelVersion: version, AuctionType: auction.GetAuctionType(), Results: make([]*routerv1.Result, len(allocs))}
	pctrOf := make(map[string]float64, len(pctrs))
	for i, c := range req.GetCandidates() {
		pctrOf[c.GetAdId()] = pctrs[i]
	}
	for i, a := range allocs {
		resp.Results[i] = &routerv1.Result{
			AdId:          a.GetAdId(),
			Slot:          a.GetSlot(),
			Pctr:          pctrOf[a.GetAdId()],
			PriceMicros:   a.GetPriceMicros(),
			ImpressionId:  ImpressionID(reqID, a.GetAdId(), a.GetSlot()),
			Ecpm:          a.GetEcpm(),
			RunnerUpEcpm:  a.GetRunnerUpEcpm(),
			ReserveMicros: a.GetReserveMicros(),
		}
	}
	return resp, nil
}

// ImpressionID identifies one shown ad; it is a pure function of the request
// ID, the ad and the slot, so identical requests get identical answers.
func ImpressionID(requestID, adID string, slot int32) string {
	h := sha256.New()
	h.Write([]byte(requestID))
	h.Write([]byte{0})
	h.Write([]byte(adID))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(int(slot))))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

var deviceNames = map[routerv1.Device]string{
	routerv1.Device_DEVICE_MOBILE:  "mobile",
	routerv1.Device_DEVICE_DESKTOP: "desktop",
	routerv1.Device_DEVICE_TABLET:  "tablet",
}

func (s *Server) features(ctx context.Context, req *routerv1.RankRequest) (*featuresv1.GetFeaturesResponse, error) {
	c, err := s.down.Features()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "features: %v", err)
	}
	ids := make([]string, len(req.GetCandidates()))
	for i, cand := range req.GetCandidates() {
		ids[i] = cand.GetAdId()
	}
	rc := req.GetContext()
	var ts *timestamppb.Timestamp
	if rc.GetTimestamp() != nil {
		ts = rc.GetTimestamp()
	}
	resp, err := c.GetFeatures(ctx, &featuresv1.GetFeaturesRequest{
		UserId: req.GetUserId(),
		AdIds:  ids,
		Context: &featuresv1.RequestContext{
			Timestamp: ts,
			Device:    deviceNames[rc.GetDevice()],
			Country:   rc.GetCountry(),
			Query:     rc.GetQuery(),
		},
	})
	if err != nil {
		return nil, downstreamError(ctx, "features", err)
	}
	if len(resp.GetAds()) != len(ids) {
		return nil, status.Errorf(codes.Internal, "features returned %d ads for %d", len(resp.GetAds()), len(ids))
	}
	return resp, nil
}

func (s *Server) score(ctx context.Context, domain, version string, feats *featuresv1.GetFeaturesResponse) ([]float64, error) {
	c, err := s.down.Ranker(domain, version)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "ranker %s/%s: %v", domain, version, err)
	}
	req := &rankerv1.ScoreRequest{Shared: feats.GetShared(), Candidates: make([]*rankerv1.ScoreCandidate, len(feats.GetAds()))}
	for i, a := range feats.GetAds() {
		req.Candidates[i] = &rankerv1.ScoreCandidate{AdId: a.GetAdId(), Features: a.GetFeatures()}
	}
	resp, err := c.Score(ctx, req)
	if err != nil {
		return nil, downstreamError(ctx, fmt.Sprintf("ranker %s/%s", domain, version), err)
	}
	return resp.GetScores(), nil
}

func (s *Server) auction(ctx context.Context, req *routerv1.RankRequest, pctrs []float64) (*auctionv1.RunAuctionResponse, error) {
	c, err := s.down.Auction()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "auction: %v", err)
	}
	ar := &auctionv1.RunAuctionRequest{Domain: req.GetDomain(), Slots: req.GetSlots(), ReserveMicros: req.GetReserveMicros(), Bids: make([]*auctionv1.Bid, len(pctrs))}
	for i, cand := range req.GetCandidates() {
		ar.Bids[i] = &auctionv1.Bid{AdId: cand.GetAdId(), AdvertiserId: cand.GetAdvertiserId(), BidMicros: cand.GetBidMicros(), Pctr: pctrs[i], Quality: cand.GetQuality()}
	}
	resp, err := c.RunAuction(ctx, ar)
	if err != nil {
		return nil, downstreamError(ctx, "auction", err)
	}
	return resp, nil
}

// downstreamError maps a failed downstream call to the caller's status: our
// own deadline or the caller's cancellation pass through; a downstream that
// is down or overloaded is UNAVAILABLE; anything else (a downstream
// INVALID_ARGUMENT included) is our fault, INTERNAL.
func downstreamError(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return status.Errorf(codes.DeadlineExceeded, "%s: deadline exceeded", what)
		}
		return status.Errorf(codes.Canceled, "%s: canceled", what)
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded:
		return status.Errorf(st.Code(), "%s: %s", what, st.Message())
	default:
		return status.Errorf(codes.Internal, "%s: %s: %s", what, st.Code(), st.Message())
	}
}

// ListDomains implements RouterService.
func (s *Server) ListDomains(context.Context, *routerv1.ListDomainsRequest) (*routerv1.ListDomainsResponse, error) {
	snap := s.table.Snapshot()
	resp := &routerv1.ListDomainsResponse{}
	for _, d := range snap.Sorted() {
		di := &routerv1.DomainInfo{Domain: d.Name, ConfigError: d.ConfigError}
		if d.Config != nil {
			di.ProductionVersion = d.Config.Production
			di.ConfigLoadedAt = timestamppb.New(d.LoadedAt)
		}
		for _, name := range sortedKeys(d.Versions) {
			v := d.Versions[name]
			di.Versions = append(di.Versions, &routerv1.VersionInfo{
				Version: v.Name, HealthyInstances: int32(v.Healthy), TotalInstances: int32(v.Total), ModelSha256: v.SHA256,
			})
		}
		resp.Domains = append(resp.Domains, di)
	}
	return resp, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
