package store

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestImpressionEncodingRoundTrips(t *testing.T) {
	at := time.Date(2026, 11, 26, 23, 40, 1, 123456789, time.UTC)
	for name, im := range map[string]Impression{
		"served": {ID: "a1", RequestID: "req-1", Domain: "feed", UserID: "u1", AdID: "ad7", Version: "v2", Strategy: "production",
			Group: "production", Propensity: 1, Slot: 1, Price: 1234, At: at},
		"experiment, logged for OPE": {ID: "b2", RequestID: "r", Domain: "stories", UserID: "ü—user", AdID: "ad", Version: "v3", Strategy: "ab",
			Experiment: "exp-9", Group: "B", Propensity: 0.03125, Slot: 3, Price: 0, At: at, OPE: true},
		"empty strings, zero time": {ID: "c3", At: time.Unix(0, 0).UTC()},
		"negative price and slot":  {ID: "d4", Slot: -1, Price: -5, Propensity: 0.5, At: at},
		"the zero time":            {ID: "e5", Domain: "feed"},
	} {
		t.Run(name, func(t *testing.T) {
			b := appendImpression(nil, im)
			got, err := readImpression(im.ID, b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, im) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, im)
			}
			js, _ := json.Marshal(im)
			if len(b) >= len(js) {
				t.Errorf("compact %d bytes, JSON %d", len(b), len(js))
			}
		})
	}
}

// Impressions written as JSON by earlier versions are still read.
func TestImpressionEncodingReadsJSON(t *testing.T) {
	want := Impression{ID: "a1", RequestID: "req-1", Domain: "feed", UserID: "u1", AdID: "ad7", Version: "v2", Strategy: "production",
		Group: "production", Propensity: 1, Slot: 2, Price: 99, At: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	js, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readImpression("a1", js)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}
}

// Every truncation of a record, a wrong version, trailing bytes and an
// out-of-range slot are errors, never a panic.
func TestImpressionEncodingRefusesMalformed(t *testing.T) {
	b := appendImpression(nil, Impression{ID: "x", RequestID: "r", Domain: "feed", Slot: 1, Price: 3, At: time.Unix(5, 0)})
	for n := range len(b) {
		if _, err := readImpression("x", b[:n]); err == nil {
			t.Errorf("a record cut to %d of %d bytes was read", n, len(b))
		}
	}
	bad := map[string][]byte{
		"version":         append([]byte{0x02}, b[1:]...),
		"trailing bytes":  append(append([]byte{}, b...), 0),
		"OPE flag":        append(append([]byte{}, b[:len(b)-1]...), 2),
		"string too long": {impV1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"slot too large":  appendImpression(nil, Impression{Slot: 1 << 40}),
	}
	for name, raw := range bad {
		if _, err := readImpression("x", raw); err == nil {
			t.Errorf("%s: read", name)
		}
	}
}

func FuzzReadImpression(f *testing.F) {
	f.Add(appendImpression(nil, Impression{ID: "x", RequestID: "r", Domain: "feed", Slot: 1, Price: 3, At: time.Unix(5, 0), OPE: true}))
	f.Add([]byte(`{"id":"x","slot":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		im, err := readImpression("x", b)
		if err != nil || len(b) == 0 || b[0] != impV1 {
			return
		}
		// What decodes encodes to a record that decodes to the same
		// (varints may come overlong; the encoding writes them short).
		enc := appendImpression(nil, im)
		im2, err := readImpression("x", enc)
		if err != nil {
			t.Fatalf("decoded %+v, encoded %x, which does not decode: %v", im, enc, err)
		}
		if again := appendImpression(nil, im2); string(again) != string(enc) {
			t.Errorf("decoded %+v, encoded %x, then %x", im, enc, again)
		}
	})
}
