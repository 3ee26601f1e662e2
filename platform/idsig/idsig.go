// Package idsig signs the impression IDs a router hands out, so that an
// event naming an impression the router never served, or an altered ID, is
// told apart before any store is asked. A signed ID is the plain ID, a dot,
// and 22 base64url characters: the first 128 bits of HMAC-SHA256 over the
// plain ID.
//
// Keys come from a file of hex lines, at least 32 bytes each. The first
// line signs; every line verifies, so a key is rotated by putting the new
// one first and dropping the old one once the attribution window has
// passed. Every router that shares experiment state needs the same file.
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
)

// MinKeyBytes bounds a key from below.
const MinKeyBytes = 32

// tagBytes is the length of the HMAC kept in an ID (128 bits).
const tagBytes = 16

// TagLength is how many characters a signature adds to an ID, dot included.
var TagLength = 1 + base64.RawURLEncoding.EncodedLen(tagBytes)

// Keys sign and verify impression IDs. The zero of *Keys (nil) signs
// nothing and accepts every ID.
type Keys struct{ keys [][]byte }

// Load reads a keys file: one hex key per line, the signing key first;
// blank lines and lines starting with # are skipped.
func Load(path string) (*Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	k := &Keys{}
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
	return &Keys{keys: [][]byte{key}}
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

// Verify reports whether signed is an ID signed by one of the keys. Every
// key is tried, in constant time for each.
func (k *Keys) Verify(signed string) bool {
	if k == nil {
		return true
	}
	if len(signed) < TagLength || signed[len(signed)-TagLength] != '.' {
		return false
	}
	id := signed[:len(signed)-TagLength]
	// Strict: the last character carries 4 unused bits, and one tag must
	// have one spelling.
	got, err := base64.RawURLEncoding.Strict().DecodeString(signed[len(signed)-TagLength+1:])
	if err != nil {
		return false
	}
	ok := false
	for _, key := range k.keys {
		if hmac.Equal(got, tag(key, id)) {
			ok = true
		}
	}
	return ok
}
