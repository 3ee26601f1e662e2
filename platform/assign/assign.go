// Package assign holds the pure functions that every place which assigns
// users to experiment arms or names impressions must agree on: the router's
// lab, and the edge client (the same code compiled to WebAssembly). It has
// no dependencies beyond the standard library.
package assign

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"slices"
	"strconv"
)

// Hash01 maps its parts to a uniform number in [0, 1).
func Hash01(parts ...string) float64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	// FNV's low bits mix poorly; fold the high half in.
	v := h.Sum64()
	v ^= v >> 33
	v *= 0xff51afd7ed558ccd
	v ^= v >> 33
	return float64(v>>11) / (1 << 53)
}

// Arm is one arm of an A/B test.
type Arm struct {
	Version string  `json:"version"`
	Weight  float64 `json:"weight"`
}

// AB returns the index of user's arm in an A/B test of domain with salt:
// sticky per user, in proportion to the weights (which are positive).
func AB(domain, salt string, arms []Arm, user string) int {
	var total float64
	for _, a := range arms {
		total += a.Weight
	}
	u := Hash01(domain, "ab", salt, user) * total
	for i, a := range arms {
		if u < a.Weight || i == len(arms)-1 {
			return i
		}
		u -= a.Weight
	}
	return len(arms) - 1
}

// InCanary reports whether user is in the canary group of version when it
// has sharePercent of the domain's users: internal users always, others
// sticky by hash.
func InCanary(domain, version string, sharePercent float64, internal []string, user string) bool {
	return slices.Contains(internal, user) || Hash01(domain, "canary", version, user) < sharePercent/100
}

// ImpressionID identifies one shown ad; it is a pure function of the request
// ID, the ad and the slot, so identical requests get identical answers.
func ImpressionID(requestID, adID string, slot int) string {
	h := sha256.New()
	h.Write([]byte(requestID))
	h.Write([]byte{0})
	h.Write([]byte(adID))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(slot)))
	return hex.EncodeToString(h.Sum(nil)[:16])
}
