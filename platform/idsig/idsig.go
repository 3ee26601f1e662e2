// Package idsig signs the impression IDs a router hands out, so that an
// event naming an impression the router never served, or an altered ID, is
// told apart before any store is asked. A signed ID is the plain ID, a dot,
// and 22 base64url characters: the first 128 bits of HMAC-SHA256 over the
// plain ID.
//
// Keys come from a file of hex lines, at least 32 bytes each. The first
// line signs; every line verifies. Impressions are stored under the plain
// ID (Open), so a rotation changes nothing stored. Rotate in three steps,
// each on every router: add the new key second, move it first, and drop
// the old one once the attribution window has passed. Every router that
// shares experiment state needs the same file.
package idsig

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"
)

// MinKeyBytes bounds a key from below.
const MinKeyBytes = 32

// tagBytes is the length of the HMAC kept in an ID (128 bits).
const tagBytes = 16

// TagLength is how many characters a signature adds to an ID, dot included.
var TagLength = 1 + base64.RawURLEncoding.EncodedLen(tagBytes)

// Keys sign and verify impression IDs. The zero of *Keys (nil) signs
// nothing and accepts every ID.
type Keys struct {
	keys [][]byte
	// unsignedUntil: until then, an ID without a signature is taken as it
	// is (the move to signed IDs; see AcceptUnsignedUntil).
	unsignedUntil time.Time
	now           func() time.Time
}

// Load reads a keys file: one hex key per line, the signing key first;
// blank lines and lines starting with # are skipped.
func Load(path string) (*Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	k := &Keys{now: time.Now}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, err := hex.DecodeString(line)
		if err != nil || len(key) < MinKeyBytes {
			return nil, fmt.Errorf("%s:%d: want a hex key of at least %d bytes", path, n, MinKeyBytes)
		}
		k.keys = append(k.keys, key)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(k.keys) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return k, nil
}

// Random returns a key that lives as long as the process: IDs it signs do
// not verify after a restart or on another router.
func Random() *Keys {
	key := make([]byte, MinKeyBytes)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	return &Keys{keys: [][]byte{key}, now: time.Now}
}

// AcceptUnsignedUntil makes Open take IDs without a signature until t: the
// IDs a router handed out before it signed them (click URLs already out,
// events queued on devices) still count for one attribution window after
// the upgrade. It returns k.
func (k *Keys) AcceptUnsignedUntil(t time.Time) *Keys {
	k.unsignedUntil = t
	return k
}

// NewKey returns a fresh key as a line for a keys file.
func NewKey() string {
	key := make([]byte, MinKeyBytes)
	_, _ = rand.Read(key)
	return hex.EncodeToString(key)
}

func tag(key []byte, id string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	return m.Sum(nil)[:tagBytes]
}

// Sign returns id with its signature.
func (k *Keys) Sign(id string) string {
	if k == nil {
		return id
	}
	return id + "." + base64.RawURLEncoding.EncodeToString(tag(k.keys[0], id))
}

// Verify reports whether signed is an ID signed by one of the keys (or an
// unsigned one, while AcceptUnsignedUntil allows).
func (k *Keys) Verify(signed string) bool {
	_, ok := k.Open(signed)
	return ok
}

// Open checks an ID's signature with every key (each in constant time) and
// returns the plain ID it signs: what impressions are stored under, so that
// a rotated key changes nothing stored.
func (k *Keys) Open(signed string) (plain string, ok bool) {
	if k == nil {
		return signed, true
	}
	n := len(signed) - TagLength
	if n < 0 || signed[n] != '.' {
		if !strings.Contains(signed, ".") && k.now().Before(k.unsignedUntil) {
			return signed, true
		}
		return "", false
	}
	id := signed[:n]
	// Strict: the last character carries 4 unused bits, and one tag must
	// have one spelling.
	got, err := base64.RawURLEncoding.Strict().DecodeString(signed[n+1:])
	if err != nil {
		return "", false
	}
	ok = false
	for _, key := range k.keys {
		if hmac.Equal(got, tag(key, id)) {
			ok = true
		}
	}
	if !ok {
		return "", false
	}
	return id, true
}
