// Package config holds each domain's auction config, read from Consul KV
// at adrank/auction/<domain>:
//
//	{"type": "vcg", "reserve_micros": 10000, "position_factors": [1, 0.7, 0.5]}
//
// type is "gsp" (default), "vcg" or "first_price"; reserve_micros is the
// domain's minimum cost per click; position_factors are the slots' relative
// click-through (non-increasing, within (0, 1]; past the last one they decay
// by auction.DefaultDecay). A domain without a config gets a GSP auction with
// no reserve and the default factors.
package config

import (
	"fmt"

	"github.com/adrank/adrank/auctionsvc/auction"
	"github.com/adrank/adrank/platform/kvconfig"
)

// Prefix is the Consul KV prefix of auction configs.
const Prefix = "adrank/auction/"

// Config is one domain's auction config.
type Config struct {
	Type            auction.Type `json:"type"`
	ReserveMicros   int64        `json:"reserve_micros"`
	PositionFactors []float64    `json:"position_factors"`
}

// Parse decodes and validates a config document.
func Parse(_ string, raw []byte) (Config, error) {
	var c Config
	if err := kvconfig.DecodeStrict(raw, &c); err != nil {
		return c, fmt.Errorf("bad JSON: %w", err)
	}
	switch c.Type {
	case "":
		c.Type = auction.GSP
	case auction.GSP, auction.VCG, auction.FirstPrice:
	default:
		return c, fmt.Errorf("type: unknown auction type %q (want gsp, vcg or first_price)", c.Type)
	}
	if c.ReserveMicros < 0 || c.ReserveMicros > auction.MaxMicros {
		return c, fmt.Errorf("reserve_micros: %d, want 0 to %d", c.ReserveMicros, int64(auction.MaxMicros))
	}
	if len(c.PositionFactors) > auction.MaxSlots {
		return c, fmt.Errorf("position_factors: %d, at most %d", len(c.PositionFactors), auction.MaxSlots)
	}
	if err := auction.CheckPositionFactors(c.PositionFactors); err != nil {
		return c, err
	}
	return c, nil
}
