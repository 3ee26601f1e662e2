// Package consultest starts a real Consul dev agent on free ports for tests.
package consultest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/adrank/adrank/platform/syncbuf"
)

// Agent is a running dev agent.
type Agent struct {
	Addr    string // HTTP API host:port
	Client  *api.Client
	cmd     *exec.Cmd
	args    []string
	bin     string
	out     *syncbuf.Buffer
	stopped bool
}

// Binary finds the consul binary: $CONSUL_BIN, then PATH, then bin/consul at
// the repository root (the directory holding go.work above the working
// directory).
func Binary() (string, error) {
	if b := os.Getenv("CONSUL_BIN"); b != "" {
		return b, nil
	}
	if b, err := exec.LookPath("consul"); err == nil {
		return b, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			b := filepath.Join(dir, "bin", "consul")
			if _, err := os.Stat(b); err != nil {
				return "", fmt.Errorf("no consul on PATH and %s is missing: run `make consul`", b)
			}
			return b, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no consul on PATH and no go.work above the working directory")
		}
		dir = parent
	}
}

// FreePorts returns n ports that are free now, for servers that a test
// starts on fixed addresses. They come from below the kernel's ephemeral
// range (net.ipv4.ip_local_port_range): the kernel picks the port of every
// listener on port 0 and of every outgoing connection from that range, so a
// free port taken from it could be handed to one of those before the server
// that asked for it binds it (seen here: "bind: address already in use").
func FreePorts(n int) ([]int, error) {
	const base = 10000
	top := ephemeralStart()
	if top-base < 1000 {
		return kernelPorts(n)
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries == 10000 {
			return nil, fmt.Errorf("no %d free ports in %d-%d", n, base, top-1)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+rand.IntN(top-base))))
		if err != nil {
			continue // taken
		}
		ls = append(ls, l) // held until all are chosen, so none comes twice
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ephemeralStart is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}

// kernelPorts asks the kernel for n free ports (port 0).
func kernelPorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start starts a dev agent on free ports and stops it when the test ends. A
// dev agent keeps its state in memory: a restart comes back empty.
func Start(t testing.TB) *Agent {
	t.Helper()
	return start(t, []string{"-dev"})
}

// StartPersistent starts a single-server agent that keeps its state in a
// data directory, so that a restart comes back with its KV and catalog, as a
// production agent does.
func StartPersistent(t testing.TB) *Agent {
	t.Helper()
	return start(t, []string{"-server", "-bootstrap-expect", "1", "-data-dir", t.TempDir(), "-ui=false"})
}

func start(t testing.TB, mode []string) *Agent {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	ports, err := FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{
		Addr: "127.0.0.1:" + strconv.Itoa(ports[0]),
		bin:  bin,
		args: append(append([]string{"agent"}, mode...),
			"-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "warn",
			"-http-port", strconv.Itoa(ports[0]), "-dns-port", "-1", "-grpc-port", strconv.Itoa(ports[1]),
			"-serf-lan-port", strconv.Itoa(ports[2]), "-serf-wan-port", strconv.Itoa(ports[3]),
			"-server-port", strconv.Itoa(ports[4]),
		),
	}
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	if a.Client, err = api.NewClient(cfg); err != nil {
		t.Fatal(err)
	}
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("consul output:\n%s", a.out.String())
		}
	})
	return a
}

// Stop stops the agent (SIGTERM, then SIGKILL after 5 s).
func (a *Agent) Stop() {
	if a.stopped {
		return
	}
	a.stopped = true
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
}

// Restart starts the agent again on the same ports (a dev agent comes back
// empty) and waits for it to have a leader.
func (a *Agent) Restart() error {
	a.out = &syncbuf.Buffer{}
	a.cmd = exec.Command(a.bin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	if err := a.cmd.Start(); err != nil {
		return fmt.Errorf("start consul: %w", err)
	}
	a.stopped = false
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if leader, err := a.Client.Status().Leader(); err == nil && leader != "" {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.Stop()
	return fmt.Errorf("consul did not elect a leader in 30s:\n%s", a.out.String())
}
