//go:build tools

// Package tools pins the Consul agent that tests and `make run` use when no
// consul is on PATH. v1.13.9 is the last MPL-2.0 release the module proxy serves.
package tools

import _ "github.com/hashicorp/consul"
