package tracing

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/adrank/adrank/platform/metrics"
)

// BenchmarkHop is the cost of one gRPC hop (an empty health check over an
// in-memory connection) bare, with tracing as every service runs it when
// no OTLP endpoint is set (the otelgrpc handlers on both ends, recording
// nothing), and with metrics too (--metrics-addr): what each adds per hop.
func BenchmarkHop(b *testing.B) {
	tr, err := New(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	m := metrics.New()
	for _, c := range []struct {
		name   string
		server []grpc.ServerOption
		client []grpc.DialOption
	}{
		{"bare", nil, nil},
		{"traced", []grpc.ServerOption{tr.ServerOption()}, []grpc.DialOption{tr.DialOption()}},
		{"traced+metrics", append(m.ServerOptions(), tr.ServerOption()), append(m.DialOptions(), tr.DialOption())},
	} {
		b.Run(c.name, func(b *testing.B) {
			lis := bufconn.Listen(1 << 20)
			srv := grpc.NewServer(c.server...)
			healthpb.RegisterHealthServer(srv, health.NewServer())
			go func() { _ = srv.Serve(lis) }()
			defer srv.Stop()
			cc, err := grpc.NewClient("passthrough:///bufnet", append(c.client,
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()))...)
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			client := healthpb.NewHealthClient(cc)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
