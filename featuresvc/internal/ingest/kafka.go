// Package ingest applies online feature writes from a Kafka topic: each
// record is a PutFeaturesRequest (binary protobuf, or protojson with the
// header content-type: application/json), applied as the PutFeatures RPC
// applies it. A record that is invalid, or that the store cannot take
// (its online rows full), goes to the dead-letter topic with the reason in
// its headers and is not applied; a store failure is retried. Offsets are
// committed once a record is applied or dead-lettered, so a restart
// resumes after the last one (a record applied twice changes nothing: the
// latest event time wins, and a row without one takes its record's
// timestamp).
package ingest

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
)

// Headers of a record; the router's stream worker uses the same.
const (
	HeaderContentType = "content-type"
	ContentJSON       = "application/json"
	HeaderError       = "adrank-error"
	HeaderTopic       = "adrank-topic"
	HeaderPartition   = "adrank-partition"
	HeaderOffset      = "adrank-offset"
)

// MaxRecordBytes bounds a record's value.
const MaxRecordBytes = 4 << 20

// Options configure a Consumer.
type Options struct {
	Brokers    []string
	Topic      string
	Group      string
	DeadLetter string
	Log        *slog.Logger
}

// Consumer applies a topic's records with put.
type Consumer struct {
	o       Options
	put     func(context.Context, *featuresv1.PutFeaturesRequest) (*featuresv1.PutFeaturesResponse, error)
	applied atomic.Uint64
	dead    atomic.Uint64
}

// New returns a consumer that applies each record with put (the
// PutFeatures RPC's handler).
func New(o Options, put func(context.Context, *featuresv1.PutFeaturesRequest) (*featuresv1.PutFeaturesResponse, error)) *Consumer {
	return &Consumer{o: o, put: put}
}

// Stats are the records applied and dead-lettered so far.
func (c *Consumer) Stats() (applied, dead uint64) { return c.applied.Load(), c.dead.Load() }

// Run consumes until ctx ends, then commits what it applied.
func (c *Consumer) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.o.Brokers...),
		kgo.ConsumerGroup(c.o.Group),
		kgo.ConsumeTopics(c.o.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AutoCommitMarks(),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := cl.CommitMarkedOffsets(cctx); err != nil {
			c.o.Log.Warn("feature writes: committing offsets at shutdown failed", "error", err)
		}
		cl.Close()
	}()
	for {
		fs := cl.PollFetches(ctx)
		if fs.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(topic string, p int32, err error) {
			c.o.Log.Warn("feature writes: fetch failed", "topic", topic, "partition", p, "error", err)
		})
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			if err := c.apply(ctx, cl, r); err != nil {
				return nil // ctx ended while retrying: the record is not marked
			}
			cl.MarkCommitRecords(r)
		}
	}
}

// apply applies one record, or dead-letters it; a store failure is retried
// until ctx ends (the error then).
func (c *Consumer) apply(ctx context.Context, cl *kgo.Client, r *kgo.Record) error {
	req := &featuresv1.PutFeaturesRequest{}
	var err error
	switch {
	case len(r.Value) > MaxRecordBytes:
		err = status.Errorf(codes.InvalidArgument, "value: %d bytes, at most %d", len(r.Value), MaxRecordBytes)
	case contentType(r) == ContentJSON:
		err = protojson.Unmarshal(r.Value, req)
	default:
		err = proto.Unmarshal(r.Value, req)
	}
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Errorf(codes.InvalidArgument, "not a PutFeaturesRequest: %v", err)
		}
		return c.deadLetter(ctx, cl, r, err)
	}
	// A row without an event time takes the record's: applied again after
	// a restart, it still orders as it did.
	for _, row := range req.GetRows() {
		if row.GetEventTime() == nil && !r.Timestamp.IsZero() {
			row.EventTime = timestamppb.New(r.Timestamp)
		}
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		_, err := c.put(ctx, req)
		switch status.Code(err) {
		case codes.OK:
			c.applied.Add(1)
			return nil
		case codes.InvalidArgument, codes.ResourceExhausted:
			return c.deadLetter(ctx, cl, r, err)
		}
		c.o.Log.Warn("feature writes: the store failed; retrying", "partition", r.Partition, "offset", r.Offset, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

// deadLetter sends r to the dead-letter topic with why and where, and
// waits until it is written (else it is retried, so nothing is lost).
func (c *Consumer) deadLetter(ctx context.Context, cl *kgo.Client, r *kgo.Record, why error) error {
	reason := status.Convert(why).Message()
	c.o.Log.Warn("feature write refused: dead-lettered", "partition", r.Partition, "offset", r.Offset, "error", reason)
	h := append([]kgo.RecordHeader(nil), r.Headers...)
	h = append(h,
		kgo.RecordHeader{Key: HeaderError, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: HeaderOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))})
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := cl.ProduceSync(ctx, &kgo.Record{Topic: c.o.DeadLetter, Key: r.Key, Value: r.Value, Headers: h}).FirstErr()
		if err == nil {
			c.dead.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, kgo.ErrClientClosed) {
			return err
		}
		c.o.Log.Warn("feature writes: dead-lettering failed; retrying", "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

func contentType(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == HeaderContentType {
			return string(h.Value)
		}
	}
	return ""
}
