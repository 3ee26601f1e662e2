// Package tlsx turns adrank's TLS flags into credentials: a server's
// certificate, reloaded when its files change so that a renewed
// certificate needs no restart, and the CA bundle a client verifies servers
// with. With no flags, everything stays plain text, as before.
//
// TLS here authenticates servers and encrypts traffic; who may call what is
// the bearer tokens' business (platform/auth). Clients present no
// certificates: Consul's gRPC health checks could not present one.
package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Config is what the flags give.
type Config struct {
	// Cert and Key are the server's certificate chain and private key
	// (PEM), both or neither; with them, the service serves TLS only.
	Cert, Key string
	// CA is the PEM bundle that clients verify servers' certificates with;
	// with it, calls to other services use TLS.
	CA string
	// ServerName is the name servers' certificates are checked against;
	// empty: each instance's host as Consul has it (platform/discovery sets
	// it per address), so a certificate needs the IPs or names that
	// instances register under.
	ServerName string
}

// Register adds --tls-cert, --tls-key, --tls-ca and --tls-server-name.
func (c *Config) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Cert, "tls-cert", "", "serve TLS only, with this certificate chain (PEM; reloaded when the file changes); needs --tls-key")
	fs.StringVar(&c.Key, "tls-key", "", "the private key of --tls-cert (PEM)")
	c.RegisterClient(fs)
}

// RegisterClient adds --tls-ca and --tls-server-name, for a program that
// only calls services.
func (c *Config) RegisterClient(fs *flag.FlagSet) {
	fs.StringVar(&c.CA, "tls-ca", "", "call adrank services over TLS, verifying their certificates with this CA bundle (PEM)")
	fs.StringVar(&c.ServerName, "tls-server-name", "", "with --tls-ca: the name servers' certificates must carry (default: each instance's host, as registered in Consul or given by address)")
}

// Serving reports whether the server side is on.
func (c Config) Serving() bool { return c.Cert != "" }

// ServerConfig is the server's TLS config, or nil when Cert is empty. The
// certificate is loaded now, so that a bad one fails at start.
func (c Config) ServerConfig() (*tls.Config, error) {
	if c.Cert == "" && c.Key == "" {
		return nil, nil
	}
	if c.Cert == "" || c.Key == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	kp := &keyPair{cert: c.Cert, key: c.Key}
	if err := kp.load(); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}, nil
}

// ServerOptions are the gRPC server options for TLS: none when off.
func (c Config) ServerOptions() ([]grpc.ServerOption, error) {
	cfg, err := c.ServerConfig()
	if cfg == nil || err != nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, nil
}

// ClientConfig is the TLS config that verifies servers with CA, or nil
// when CA is empty.
func (c Config) ClientConfig() (*tls.Config, error) {
	if c.CA == "" {
		if c.ServerName != "" {
			return nil, errors.New("--tls-server-name needs --tls-ca")
		}
		return nil, nil
	}
	pem, err := os.ReadFile(c.CA)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", c.CA)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: c.ServerName}, nil
}

// DialOption is the gRPC dial option for calls to other services: TLS
// verified with CA, or plain text when CA is empty.
func (c Config) DialOption() (grpc.DialOption, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// keyPair is a certificate loaded from files and loaded again when either
// file's modification time changes (checked at most once a second). A
// reload that fails keeps the last good certificate.
type keyPair struct {
	cert, key string

	mu      sync.Mutex
	current *tls.Certificate
	mods    [2]time.Time
	checked time.Time
}

func (k *keyPair) load() error {
	mods, err := modTimes(k.cert, k.key)
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	k.current, k.mods = &c, mods
	return nil
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now := time.Now(); now.Sub(k.checked) >= time.Second {
		k.checked = now
		if mods, err := modTimes(k.cert, k.key); err == nil && mods != k.mods {
			_ = k.load() // a half-written pair fails now and loads at the next check
		}
	}
	return k.current, nil
}

func modTimes(paths ...string) ([2]time.Time, error) {
	var out [2]time.Time
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		out[i] = fi.ModTime()
	}
	return out, nil
}
