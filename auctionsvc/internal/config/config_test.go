package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/adrank/adrank/auctionsvc/auction"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Config
		wantErr string
	}{
		{`{}`, Config{Type: auction.GSP}, ""},
		{`{"type": "vcg", "reserve_micros": 10000, "position_factors": [1, 0.7, 0.5]}`, Config{Type: auction.VCG, ReserveMicros: 10000, PositionFactors: []float64{1, 0.7, 0.5}}, ""},
		{`{"type": "first_price"}`, Config{Type: auction.FirstPrice}, ""},
		{`{"type": "english"}`, Config{}, `unknown auction type "english"`},
		{`{"reserve_micros": -5}`, Config{}, "reserve_micros"},
		{`{"position_factors": [0.5, 0.9]}`, Config{}, "position_factors[1]"},
		{`{"position_factors": [0]}`, Config{}, "position_factors[0]"},
		{`{"type": "gsp", "typo": 1}`, Config{}, "unknown field"},
		{`{"type": `, Config{}, "bad JSON"},
	}
	for _, tt := range tests {
		got, err := Parse("feed", []byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
		} else if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", tt.in, diff)
		}
	}
}
