package tracing

import (
	"context"
	"testing"
)

func TestNew(t *testing.T) {
	ctx := context.Background()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	off, err := New(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	if _, span := off.Provider.Tracer("t").Start(ctx, "x"); span.IsRecording() {
		t.Error("spans recorded with no endpoint set")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
	on, err := New(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = on.Shutdown(ctx) }() // nothing listens there: nothing to wait for
	if _, span := on.Provider.Tracer("t").Start(ctx, "x"); !span.IsRecording() {
		t.Error("spans not recorded with an endpoint set")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	if _, err := New(ctx, "svc"); err == nil {
		t.Error("http/protobuf accepted; only gRPC is exported")
	}
}
