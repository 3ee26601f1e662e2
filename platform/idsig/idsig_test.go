package idsig_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/adrank/adrank/platform/idsig"
)

func write(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSignVerify(t *testing.T) {
	k, err := idsig.Load(write(t, "# impression keys", idsig.NewKey()))
	if err != nil {
		t.Fatal(err)
	}
	id := "0123456789abcdef0123456789abcdef"
	s := k.Sign(id)
	if !strings.HasPrefix(s, id+".") || len(s) != len(id)+idsig.TagLength {
		t.Fatalf("signed %q", s)
	}
	if !k.Verify(s) {
		t.Fatal("own signature refused")
	}
	if plain, ok := k.Open(s); !ok || plain != id {
		t.Fatalf("Open(%q) = %q, %v", s, plain, ok)
	}
	// The last of 22 base64 characters holds 2 bits of the tag and 4
	// unused ones: another character with the same 2 bits decodes to the
	// same tag unless decoding is strict.
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", s[len(s)-1])
	sameBits := s[:len(s)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last^1])
	if k.Verify(sameBits) {
		t.Errorf("a second spelling of the tag verified: %q", sameBits)
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	for name, bad := range map[string]string{
		"plain":           id,
		"altered id":      flip(s, 3),
		"altered tag":     flip(s, len(s)-1),
		"other id's tag":  "f" + s[1:],
		"truncated":       s[:len(s)-1],
		"no dot":          strings.Replace(s, ".", "x", 1),
		"not base64":      s[:len(s)-1] + "!",
		"empty":           "",
		"tag only":        s[len(id):],
		"other key":       idsig.Random().Sign(id),
		"signature alone": "." + s[len(id)+1:],
	} {
		if k.Verify(bad) {
			t.Errorf("%s: %q verified", name, bad)
		}
	}
	var nilKeys *idsig.Keys
	if nilKeys.Sign(id) != id || !nilKeys.Verify("anything") {
		t.Error("nil keys must sign nothing and accept everything")
	}
}

// Rotation: the new key goes first and signs; IDs signed by the old key
// still verify while it stays in the file.
func TestRotation(t *testing.T) {
	oldKey, newKey := idsig.NewKey(), idsig.NewKey()
	before, err := idsig.Load(write(t, oldKey))
	if err != nil {
		t.Fatal(err)
	}
	after, err := idsig.Load(write(t, newKey, oldKey))
	if err != nil {
		t.Fatal(err)
	}
	dropped, err := idsig.Load(write(t, newKey))
	if err != nil {
		t.Fatal(err)
	}
	s := before.Sign("impression")
	if !after.Verify(s) || dropped.Verify(s) {
		t.Errorf("old key's ID: verified after rotation %v (want true), after the old key was dropped %v (want false)", after.Verify(s), dropped.Verify(s))
	}
	if after.Sign("impression") == s || !after.Verify(after.Sign("impression")) {
		t.Error("the first key must sign")
	}
}

func TestLoadRefuses(t *testing.T) {
	for name, content := range map[string][]string{
		"empty":     {"# nothing"},
		"short key": {strings.Repeat("ab", idsig.MinKeyBytes-1)},
		"not hex":   {strings.Repeat("zz", idsig.MinKeyBytes)},
	} {
		if _, err := idsig.Load(write(t, content...)); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := idsig.Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file loaded")
	}
}

// While AcceptUnsignedUntil allows, an unsigned ID is taken as it is;
// after, it is refused. A malformed signed one never is.
func TestAcceptUnsignedUntil(t *testing.T) {
	k := idsig.Random().AcceptUnsignedUntil(time.Now().Add(time.Hour))
	if plain, ok := k.Open("0123456789abcdef0123456789abcdef"); !ok || plain != "0123456789abcdef0123456789abcdef" {
		t.Errorf("unsigned ID refused during the transition: %q %v", plain, ok)
	}
	if k.Verify("0123.nope") {
		t.Error("a bad signature verified during the transition")
	}
	k.AcceptUnsignedUntil(time.Now().Add(-time.Second))
	if k.Verify("0123456789abcdef0123456789abcdef") {
		t.Error("unsigned ID taken after the transition")
	}
}
