package routing

import (
	"testing"
	"unicode/utf8"
)

// FuzzParseConfig: no domain config panics, and an accepted one names a
// production version of at most 63 bytes from [a-z0-9_.-] and a known mode
// (checked apart from ParseConfig).
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"production": "v1"}`))
	f.Add([]byte(`{"production": "v2", "mode": "batch"}`))
	f.Add([]byte(`{"production": "V1"}`))
	f.Add([]byte(`{"production": "v1\u202e"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		p := c.Production
		if p == "" || len(p) > 63 || !utf8.ValidString(p) {
			t.Fatalf("accepted production %q", p)
		}
		for _, r := range p {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
				t.Fatalf("accepted production %q", p)
			}
		}
		if c.Mode != "" && c.Mode != ModeRealtime && c.Mode != ModeBatch {
			t.Fatalf("accepted mode %q", c.Mode)
		}
	})
}
