package gateway

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	routerv1 "github.com/adrank/adrank/gen/adrank/router/v1"
)

func TestJSONDecoderMatchesJSONPb(t *testing.T) {
	pb := runtime.JSONPb{UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false}}
	ours := &jsonMarshaler{pb}
	tests := []struct {
		name, body string
		err        bool // both decoders refuse it
	}{
		{"request", `{"user_id": "u1", "domain": "feed", "slots": 2, "candidates": [{"ad_id": "ad1", "bid_micros": "900000"}], "context": {"device": "DEVICE_MOBILE", "timestamp": "2026-11-25T12:00:00Z"}}`, false},
		{"camel case names", `{"userId": "u1", "candidates": [{"adId": "ad1", "bidMicros": 5}]}`, false},
		{"unknown field", `{"user": "u1"}`, true},
		{"wrong type", `{"slots": "two"}`, true},
		{"malformed", `{"user_id": `, true},
	}
	for _, tt := range tests {
		var want, got routerv1.RankRequest
		errWant := pb.NewDecoder(strings.NewReader(tt.body)).Decode(&want)
		errGot := ours.NewDecoder(strings.NewReader(tt.body)).Decode(&got)
		if (errWant != nil) != tt.err || (errGot != nil) != tt.err {
			t.Errorf("%s: JSONPb error %v, ours %v; want an error: %v", tt.name, errWant, errGot, tt.err)
			continue
		}
		if !proto.Equal(&want, &got) {
			t.Errorf("%s: decoded %v, JSONPb %v", tt.name, &got, &want)
		}
	}
	// An empty body is io.EOF, which the handlers take as an empty message.
	var r routerv1.RankRequest
	if err := ours.NewDecoder(strings.NewReader(" \n")).Decode(&r); !errors.Is(err, io.EOF) {
		t.Errorf("empty body: %v, want io.EOF", err)
	}
	// Trailing data after the value is refused (JSONPb ignores it).
	if err := ours.NewDecoder(strings.NewReader(`{"user_id": "u1"} {"user_id": "u2"}`)).Decode(&r); err == nil {
		t.Error("trailing data accepted")
	}
}

func TestOutgoingHeaders(t *testing.T) {
	for key, want := range map[string]string{"server-timing": "Server-Timing", "x-other": "Grpc-Metadata-x-other"} {
		if got, ok := outgoingHeader(key); !ok || got != want {
			t.Errorf("%s: %q %v, want %q", key, got, ok, want)
		}
	}
}
