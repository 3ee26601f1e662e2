package consultest

import (
	"net"
	"strconv"
	"testing"
)

// FreePorts gives distinct ports, free now, from below the kernel's
// ephemeral range, so that no listener on port 0 can take one first.
func TestFreePortsAreBelowTheEphemeralRange(t *testing.T) {
	ports, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p >= ephemeralStart() || p < 10000 {
			t.Errorf("port %d: repeated, or outside 10000-%d", p, ephemeralStart()-1)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Errorf("port %d is not free: %v", p, err)
			continue
		}
		l.Close()
	}
}
