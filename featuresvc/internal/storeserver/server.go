// Package storeserver serves FeatureService from the feature store: the
// user's row and the request context in the shared row; each ad's row, its
// derived features and its crosses with the user in the ad rows; snapshot
// loads, online writes and the store's status.
package storeserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/adrank/adrank/featuresvc/internal/counters"
	"github.com/adrank/adrank/featuresvc/internal/features"
	"github.com/adrank/adrank/featuresvc/internal/store"
	"github.com/adrank/adrank/featuresvc/internal/table"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/ml/featurespec"
	"github.com/adrank/adrank/ml/world"
)

// Server implements FeatureService over a feature store.
type Server struct {
	featuresv1.UnimplementedFeatureServiceServer
	st     store.Store
	now    func() time.Time
	tmpDir string
	limits table.Limits
	maxLen int64

	user, ad *featurespec.Entity
	shared   []string // column names
	adCols   []string
	derived  []derived
	crosses  []cross
	// counters by entity, nil for an entity without them
	counters map[string]*counters.Set
	// loads lets one file be read at a time: a file's rows are in memory
	// until swapped in.
	loads chan struct{}
}

type derived struct {
	of int // index among the ad's string features
}

type cross struct {
	name     string
	of       int // index among the ad's string features: the cross's second key
	n        int // numeric features
	counters *counters.Set
	width    int // columns: the numeric features, then the counters'
}

// Options configure a Server.
type Options struct {
	// TmpDir holds uploaded files while they are validated.
	TmpDir string
	// MaxFileBytes bounds an uploaded file.
	MaxFileBytes int64
	Limits       table.Limits
	Now          func() time.Time
	// MaxCounterKeys bounds each entity's real-time counters (0:
	// DefaultMaxCounterKeys).
	MaxCounterKeys int
}

// DefaultMaxCounterKeys is the default bound on each entity's counter keys.
const DefaultMaxCounterKeys = 1_000_000

// NewServer serves st.
func New(st store.Store, o Options) *Server {
	spec := st.Spec()
	s := &Server{st: st, now: o.Now, tmpDir: o.TmpDir, limits: o.Limits, maxLen: o.MaxFileBytes,
		user: spec.Entity(featurespec.User), ad: spec.Entity(featurespec.Ad), counters: map[string]*counters.Set{}, loads: make(chan struct{}, 1)}
	if o.MaxCounterKeys <= 0 {
		o.MaxCounterKeys = DefaultMaxCounterKeys
	}
	for _, c := range spec.Counters {
		s.counters[c.Entity] = counters.New(c.Durations(), o.MaxCounterKeys)
	}
	counterNames := func(entity string) []string {
		if c := spec.Counter(entity); c != nil {
			return c.Names()
		}
		return nil
	}
	if s.user != nil {
		for _, f := range s.user.Numeric() {
			s.shared = append(s.shared, f.Name)
		}
		s.shared = append(s.shared, counterNames(featurespec.User)...)
	}
	s.shared = append(s.shared, world.ContextColumns...)
	if s.ad != nil {
		for _, f := range s.ad.Numeric() {
			s.adCols = append(s.adCols, f.Name)
		}
		s.adCols = append(s.adCols, counterNames(featurespec.Ad)...)
		for _, d := range spec.Derived {
			s.adCols = append(s.adCols, d.Name)
			s.derived = append(s.derived, derived{of: stringIndex(s.ad, d.Of)})
		}
		for _, c := range spec.Crosses() {
			for _, f := range c.Numeric() {
				s.adCols = append(s.adCols, f.Name)
			}
			s.adCols = append(s.adCols, counterNames(c.Name)...)
			x := cross{name: c.Name, of: stringIndex(s.ad, c.Keys[1]), n: len(c.Numeric()), counters: s.counters[c.Name]}
			x.width = x.n + len(counterNames(c.Name))
			s.crosses = append(s.crosses, x)
		}
	}
	return s
}

func stringIndex(e *featurespec.Entity, name string) int {
	for i, f := range e.Strings() {
		if f.Name == name {
			return i
		}
	}
	return -1
}

// GetFeatures implements FeatureService. Unknown users and ads are served
// with their features absent. Every entity is read through one view, in a
// lookup per entity (one round trip each with Redis): the user, the ads,
// then each cross for the categories the ads have.
func (s *Server) GetFeatures(ctx context.Context, req *featuresv1.GetFeaturesRequest) (*featuresv1.GetFeaturesResponse, error) {
	c, err := features.Validate(req)
	if err != nil {
		return nil, err
	}
	uid, ids := req.GetUserId(), req.GetAdIds()
	view, err := s.st.View(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	var one [1]store.Row
	var oneFound [1]bool
	if s.user != nil {
		if err := view.Get(ctx, featurespec.User, []string{uid}, one[:], oneFound[:]); err != nil {
			return nil, storeError(err)
		}
	}
	urow, userKnown := one[0], oneFound[0]
	now := s.now()
	var cbuf [2 * featurespec.MaxWindows]counters.Counts
	shared := &featuresv1.FeatureTable{Names: s.shared, Values: make([]float64, len(s.shared)), Rows: 1}
	j := 0
	if s.user != nil {
		j = fillRow(shared.Values, urow.Nums, userKnown, len(s.user.Numeric()))
		j += writeCounts(s.counters[featurespec.User], uid, now, cbuf[:], shared.Values[j:])
	}
	world.ContextRow(c, shared.Values[j:])
	w := len(s.adCols)
	ads := &featuresv1.FeatureTable{Names: s.adCols, Values: make([]float64, len(ids)*w), Rows: int32(len(ids))}
	resp := &featuresv1.GetFeaturesResponse{UserKnown: userKnown, Shared: shared, AdFeatures: ads, Ads: make([]*featuresv1.AdFeatures, len(ids))}
	adInfo := make([]featuresv1.AdFeatures, len(ids)) // one allocation, not one per ad
	if s.ad == nil {
		fill(ads.Values)
		for i, id := range ids {
			adInfo[i].AdId = id
			resp.Ads[i] = &adInfo[i]
		}
		return resp, nil
	}
	arows, afound := make([]store.Row, len(ids)), make([]bool, len(ids))
	if err := view.Get(ctx, featurespec.Ad, ids, arows, afound); err != nil {
		return nil, storeError(err)
	}
	// Ads share categories: each (cross, category) is looked up once.
	crossVals := make([]map[string][]float64, len(s.crosses))
	for xi, x := range s.crosses {
		var cats, keys []string
		crossVals[xi] = map[string][]float64{}
		for i := range ids {
			if !afound[i] {
				continue
			}
			if cat := arows[i].Strs[x.of]; cat != "" {
				if _, ok := crossVals[xi][cat]; !ok {
					crossVals[xi][cat] = nil
					cats, keys = append(cats, cat), append(keys, table.Key(uid, cat))
				}
			}
		}
		crows, cfound := make([]store.Row, len(keys)), make([]bool, len(keys))
		if userKnown && len(keys) > 0 { // a cross's row needs a known user; its counters do not
			if err := view.Get(ctx, x.name, keys, crows, cfound); err != nil {
				return nil, storeError(err)
			}
		}
		for k, cat := range cats {
			vals := make([]float64, x.width)
			j := fillRow(vals, crows[k].Nums, cfound[k], x.n)
			writeCounts(x.counters, keys[k], now, cbuf[:], vals[j:])
			crossVals[xi][cat] = vals
		}
	}
	query := strings.Fields(strings.ToLower(c.Query))
	nAd, adCounters := len(s.ad.Numeric()), s.counters[featurespec.Ad]
	for i, id := range ids {
		row := ads.Values[i*w : (i+1)*w]
		arow, known := arows[i], afound[i]
		adInfo[i].AdId, adInfo[i].Known = id, known
		resp.Ads[i] = &adInfo[i]
		j := fillRow(row, arow.Nums, known, nAd)
		j += writeCounts(adCounters, id, now, cbuf[:], row[j:])
		for _, d := range s.derived {
			row[j] = math.NaN()
			if known {
				row[j] = queryContains(query, arow.Strs[d.of])
			}
			j++
		}
		for xi, x := range s.crosses {
			cat := ""
			if known {
				cat = arow.Strs[x.of]
			}
			if cat == "" {
				fill(row[j : j+x.width])
			} else {
				copy(row[j:j+x.width], crossVals[xi][cat])
			}
			j += x.width
		}
	}
	return resp, nil
}

// storeError is a store's failure as a status: the store is unavailable.
func storeError(err error) error {
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return err
	}
	if errors.Is(err, store.ErrNewerSnapshot) {
		return status.Error(codes.Aborted, err.Error())
	}
	return status.Errorf(codes.Unavailable, "feature store: %v", err)
}

// fillRow copies n values into row, or n missing values when the row is not
// known, and returns n.
func fillRow(row, values []float64, known bool, n int) int {
	if known {
		copy(row[:n], values)
	} else {
		fill(row[:n])
	}
	return n
}

// writeCounts writes key's counts (impressions, then clicks, per window)
// into row and returns how many values it wrote; none without counters.
func writeCounts(set *counters.Set, key string, now time.Time, buf []counters.Counts, row []float64) int {
	if set == nil {
		return 0
	}
	n := len(set.Windows())
	set.Get(key, now, buf[:n])
	for i, c := range buf[:n] {
		row[2*i], row[2*i+1] = float64(c.Impressions), float64(c.Clicks)
	}
	return 2 * n
}

// queryContains is 1 when the query's words hold cat (lower-cased), 0 when
// they do not, and missing for an ad without the category.
func queryContains(query []string, cat string) float64 {
	if cat == "" {
		return math.NaN()
	}
	cat = strings.ToLower(cat)
	for _, w := range query {
		if w == cat {
			return 1
		}
	}
	return 0
}

func fill(row []float64) {
	for i := range row {
		row[i] = math.NaN()
	}
}

// BatchGetFeatures implements FeatureService.
func (s *Server) BatchGetFeatures(ctx context.Context, req *featuresv1.BatchGetFeaturesRequest) (*featuresv1.BatchGetFeaturesResponse, error) {
	return features.Batch(ctx, req, s.GetFeatures)
}

// LoadSnapshot implements FeatureService: it spools the upload to a file,
// validates it whole, and swaps it in.
func (s *Server) LoadSnapshot(stream grpc.ClientStreamingServer[featuresv1.LoadSnapshotRequest, featuresv1.LoadSnapshotResponse]) error {
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "header: the stream is empty; the first message must name the entity and format")
	}
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "header: the first message must name the entity and format")
	}
	e := s.st.Spec().Entity(h.GetEntity())
	if e == nil {
		return status.Errorf(codes.InvalidArgument, "header.entity: %q is not an entity of the feature spec (it declares %s)", h.GetEntity(), entityNames(s.st.Spec()))
	}
	if f := h.GetFormat(); f != "csv" && f != "parquet" {
		return status.Errorf(codes.InvalidArgument, "header.format: %q, want csv or parquet", f)
	}
	if len(h.GetSource()) > 256 {
		return status.Errorf(codes.InvalidArgument, "header.source: %d bytes, at most 256", len(h.GetSource()))
	}
	var asOf time.Time
	if ts := h.GetAsOf(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "header.as_of: %v", err)
		}
		asOf = ts.AsTime()
		if asOf.After(s.now().Add(time.Hour)) {
			return status.Errorf(codes.InvalidArgument, "header.as_of: %s is more than an hour in the future", asOf.Format(time.RFC3339))
		}
	}
	f, err := os.CreateTemp(s.tmpDir, "upload-*")
	if err != nil {
		return status.Errorf(codes.Internal, "spooling the upload: %v", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	size := int64(0)
	for msg := first; ; {
		if msg.GetHeader() != nil && msg != first {
			return status.Error(codes.InvalidArgument, "header: only the first message carries one")
		}
		if size += int64(len(msg.GetData())); size > s.maxLen {
			return status.Errorf(codes.InvalidArgument, "data: the file is over %d bytes", s.maxLen)
		}
		if _, err := f.Write(msg.GetData()); err != nil {
			return status.Errorf(codes.Internal, "spooling the upload: %v", err)
		}
		msg, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	select { // one file read at a time
	case s.loads <- struct{}{}:
		defer func() { <-s.loads }()
	case <-stream.Context().Done():
		return status.FromContextError(stream.Context().Err()).Err()
	}
	var rows *table.Rows
	if h.GetFormat() == "csv" {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return status.Errorf(codes.Internal, "reading the upload: %v", err)
		}
		rows, err = table.ReadCSV(f, e, s.limits)
	} else {
		rows, err = table.ReadParquet(f, size, e, s.limits)
	}
	if err != nil {
		return rowErrors("the file is invalid and was not loaded", err)
	}
	m, err := s.st.Swap(stream.Context(), rows, asOf, h.GetSource())
	if err != nil {
		return storeError(err)
	}
	return stream.SendAndClose(&featuresv1.LoadSnapshotResponse{Status: s.entityStatus(store.Status{Entity: e.Name, Snapshot: &m})})
}

// LoadBytes validates a file held in memory and swaps it in, as LoadSnapshot
// does: featuresvc loads the demo world's files through it.
func (s *Server) LoadBytes(ctx context.Context, entity, format string, data []byte, asOf time.Time, source string) (store.Meta, error) {
	e := s.st.Spec().Entity(entity)
	if e == nil {
		return store.Meta{}, fmt.Errorf("entity %q is not in the feature spec", entity)
	}
	select { // one file read at a time
	case s.loads <- struct{}{}:
		defer func() { <-s.loads }()
	case <-ctx.Done():
		return store.Meta{}, ctx.Err()
	}
	var rows *table.Rows
	var err error
	if format == "csv" {
		rows, err = table.ReadCSV(bytes.NewReader(data), e, s.limits)
	} else {
		rows, err = table.ReadParquet(bytes.NewReader(data), int64(len(data)), e, s.limits)
	}
	if err != nil {
		return store.Meta{}, fmt.Errorf("entity %s: %w", entity, err)
	}
	return s.st.Swap(ctx, rows, asOf, source)
}

// rowErrors is INVALID_ARGUMENT with every listed error as a field
// violation ("row 12.user_age").
func rowErrors(msg string, err error) error {
	var te *table.Errors
	if !errors.As(err, &te) {
		return status.Errorf(codes.InvalidArgument, "%s: %v", msg, err)
	}
	st := status.New(codes.InvalidArgument, msg+": "+te.Error())
	br := &errdetails.BadRequest{}
	for _, x := range te.List {
		field := x.Field
		if x.Row > 0 {
			field = fmt.Sprintf("row %d.%s", x.Row, x.Field)
		}
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: field, Description: x.Msg})
	}
	if d, err := st.WithDetails(br); err == nil {
		st = d
	}
	return st.Err()
}

// PutFeatures implements FeatureService.
func (s *Server) PutFeatures(ctx context.Context, req *featuresv1.PutFeaturesRequest) (*featuresv1.PutFeaturesResponse, error) {
	if s.st.Spec().Entity(req.GetEntity()) == nil {
		return nil, status.Errorf(codes.InvalidArgument, "entity: %q is not an entity of the feature spec (it declares %s)", req.GetEntity(), entityNames(s.st.Spec()))
	}
	if n := len(req.GetRows()); n == 0 || n > store.MaxPutRows {
		return nil, status.Errorf(codes.InvalidArgument, "rows: %d rows, want 1 to %d", n, store.MaxPutRows)
	}
	ups := make([]store.Update, len(req.GetRows()))
	for i, r := range req.GetRows() {
		ups[i] = store.Update{Key: r.GetKey(), Nums: r.GetValues(), Strs: r.GetStrings()}
		if ts := r.GetEventTime(); ts != nil {
			if err := ts.CheckValid(); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "rows[%d].event_time: %v", i, err)
			}
			ups[i].EventTime = ts.AsTime()
		}
	}
	if err := s.st.Put(ctx, req.GetEntity(), ups); err != nil {
		switch {
		case errors.Is(err, store.ErrFull):
			return nil, status.Error(codes.ResourceExhausted, err.Error())
		case errors.As(err, new(*table.Errors)):
			return nil, rowErrors("nothing was written", err)
		}
		return nil, storeError(err)
	}
	return &featuresv1.PutFeaturesResponse{}, nil
}

// GetFeatureStatus implements FeatureService.
func (s *Server) GetFeatureStatus(ctx context.Context, _ *featuresv1.GetFeatureStatusRequest) (*featuresv1.GetFeatureStatusResponse, error) {
	_, shared := s.st.(*store.Redis)
	resp := &featuresv1.GetFeatureStatusResponse{Served: s.st.Spec().Served(), Shared: shared}
	sts, err := s.st.Status(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	for _, st := range sts {
		resp.Entities = append(resp.Entities, s.entityStatus(st))
	}
	return resp, nil
}

func (s *Server) entityStatus(st store.Status) *featuresv1.EntityStatus {
	out := &featuresv1.EntityStatus{Entity: st.Entity, OnlineRows: int64(st.OnlineRows)}
	if set := s.counters[st.Entity]; set != nil {
		keys, dropped := set.Stats()
		out.CounterKeys, out.CounterDropped = int64(keys), dropped
	}
	if m := st.Snapshot; m != nil {
		out.Version, out.Rows, out.Source = m.Version, int64(m.Rows), m.Source
		out.AsOf, out.LoadedAt = timestamppb.New(m.AsOf), timestamppb.New(m.LoadedAt)
		out.AgeSeconds = s.now().Sub(m.LoadedAt).Seconds()
	}
	return out
}

func entityNames(spec *featurespec.Spec) string {
	var out []string
	for _, e := range spec.Entities {
		out = append(out, e.Name)
	}
	return strings.Join(out, ", ")
}
