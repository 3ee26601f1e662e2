package tlsx_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/adrank/adrank/platform/tlsx"
	"github.com/adrank/adrank/platform/tlsx/tlstest"
)

// serve runs a gRPC health server with cfg's server side on a free port.
func serve(t *testing.T, cfg tlsx.Config) string {
	t.Helper()
	opts, err := cfg.ServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func check(t *testing.T, addr string, opt grpc.DialOption) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, opt)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	return err
}

func TestTLS(t *testing.T) {
	pki := tlstest.New(t)
	cert, key := pki.Server(t, "svc", "127.0.0.1", "adrank.test")
	addr := serve(t, tlsx.Config{Cert: cert, Key: key})
	other := tlstest.New(t)
	dial := func(cfg tlsx.Config) grpc.DialOption {
		t.Helper()
		opt, err := cfg.DialOption()
		if err != nil {
			t.Fatal(err)
		}
		return opt
	}
	for _, tt := range []struct {
		name string
		opt  grpc.DialOption
		ok   bool
	}{
		{"verified by the CA", dial(tlsx.Config{CA: pki.CAFile}), true},
		{"verified under a name the certificate has", dial(tlsx.Config{CA: pki.CAFile, ServerName: "adrank.test"}), true},
		{"plain text", grpc.WithTransportCredentials(insecure.NewCredentials()), false},
		{"another CA", dial(tlsx.Config{CA: other.CAFile}), false},
		{"a name the certificate lacks", dial(tlsx.Config{CA: pki.CAFile, ServerName: "elsewhere.test"}), false},
	} {
		if err := check(t, addr, tt.opt); (err == nil) != tt.ok {
			t.Errorf("%s: %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	// Without flags, plain text as before.
	plain := serve(t, tlsx.Config{})
	if err := check(t, plain, dial(tlsx.Config{})); err != nil {
		t.Errorf("plain text: %v", err)
	}
}

// A renewed certificate is served without a restart.
func TestCertificateReload(t *testing.T) {
	pki := tlstest.New(t)
	cert, key := pki.Server(t, "svc", "127.0.0.1")
	cfg, err := tlsx.Config{Cert: cert, Key: key}.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	client, err := tlsx.Config{CA: pki.CAFile}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", lis.Addr().String(), client)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	renewed, renewedKey := pki.Server(t, "renewed", "127.0.0.1")
	for _, f := range [][2]string{{renewed, cert}, {renewedKey, key}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(filepath.Dir(f[1]), "tmp")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f[1]); err != nil {
			t.Fatal(err)
		}
	}
	// Files are checked at most once a second.
	deadline := time.Now().Add(10 * time.Second)
	for serial() == first {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not served within 10s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestConfigErrors(t *testing.T) {
	pki := tlstest.New(t)
	cert, _ := pki.Server(t, "svc", "127.0.0.1")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (tlsx.Config{Cert: cert}).ServerConfig(); err == nil {
		t.Error("a certificate without its key was taken")
	}
	if _, err := (tlsx.Config{Cert: cert, Key: cert}).ServerConfig(); err == nil {
		t.Error("a certificate as its own key was taken")
	}
	if _, err := (tlsx.Config{CA: notPEM}).ClientConfig(); err == nil {
		t.Error("a CA file without a certificate was taken")
	}
	if _, err := (tlsx.Config{ServerName: "x"}).ClientConfig(); err == nil {
		t.Error("--tls-server-name without --tls-ca was taken")
	}
}
