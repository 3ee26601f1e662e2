package kvconfig

import (
	"errors"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"
)

func TestLastGoodValueKeepsServing(t *testing.T) {
	allowed := map[string]bool{"1": true, "2": true}
	s := New("cfg/", slog.New(slog.NewTextHandler(io.Discard, nil)), func(_ string, raw []byte) (int, error) {
		if !allowed[string(raw)] {
			return 0, errors.New("not allowed: " + string(raw))
		}
		return strconv.Atoi(string(raw))
	})
	got := s.Update(map[string][]byte{"a": []byte("1"), "b": []byte("x")})
	if e := got["a"]; !e.Valid || e.Value != 1 || e.Error != "" {
		t.Errorf("a %+v", e)
	}
	if e := got["b"]; e.Valid || e.Error != "not allowed: x" {
		t.Errorf("b %+v", e)
	}
	loaded := got["a"].LoadedAt

	got = s.Update(map[string][]byte{"a": []byte("3"), "b": []byte("x")})
	if e := got["a"]; !e.Valid || e.Value != 1 || e.Error != "not allowed: 3" || e.LoadedAt != loaded {
		t.Errorf("a after a bad value %+v", e)
	}
	// Reevaluate retries rejected values against what the parser now allows.
	allowed["3"] = true
	got = s.Reevaluate()
	if e := got["a"]; !e.Valid || e.Value != 3 || e.Error != "" {
		t.Errorf("a after reevaluate %+v", e)
	}
	// A deleted key is gone, good or bad.
	got = s.Update(map[string][]byte{"b": []byte("2")})
	if _, ok := got["a"]; ok || got["b"].Value != 2 {
		t.Errorf("after delete %+v", got)
	}
}

// A Set that keeps deleted keys serves a deleted key's last good value,
// says it was deleted, and takes a new value when one is written.
func TestKeepDeleted(t *testing.T) {
	s := New("auction/", slog.New(slog.NewTextHandler(io.Discard, nil)), func(_ string, raw []byte) (int, error) {
		return strconv.Atoi(string(raw))
	}).KeepDeleted()
	s.Update(map[string][]byte{"feed": []byte("7"), "bad": []byte("x")})
	got := s.Update(map[string][]byte{})
	if e := got["feed"]; !e.Valid || e.Value != 7 || e.Error != DeletedError {
		t.Fatalf("deleted feed: %+v", e)
	}
	if _, ok := got["bad"]; ok {
		t.Fatalf("a deleted key that never had a good value is kept: %+v", got["bad"])
	}
	got = s.Update(map[string][]byte{"feed": []byte("9")})
	if e := got["feed"]; e.Value != 9 || e.Error != "" {
		t.Fatalf("rewritten feed: %+v", e)
	}
}

func TestNames(t *testing.T) {
	got := Names("p/", api.KVPairs{{Key: "p/a", Value: []byte("1")}, {Key: "p/", Value: []byte("dir")}, {Key: "p/x/y", Value: []byte("deep")}})
	if diff := cmp.Diff(map[string][]byte{"a": []byte("1")}, got); diff != "" {
		t.Error(diff)
	}
}

func TestDecodeStrict(t *testing.T) {
	var v struct{ A int }
	for in, ok := range map[string]bool{`{"A": 1}`: true, `{"A": 1, "B": 2}`: false, `{"A": 1} {}`: false, `{"A": "x"}`: false, ``: false} {
		if err := DecodeStrict([]byte(in), &v); (err == nil) != ok {
			t.Errorf("%q: err %v", in, err)
		}
	}
}
