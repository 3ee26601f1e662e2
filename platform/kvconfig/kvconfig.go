// Package kvconfig keeps per-key JSON configs read from a Consul KV prefix,
// with last-good semantics: a value that does not parse or validate is
// rejected with a logged error, and the last good value for that key keeps
// serving. Deleting a key removes its config, unless the Set keeps deleted
// values (KeepDeleted): for a config whose absence would be unsafe.
package kvconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Entry is one key's state.
type Entry[T any] struct {
	Value T
	// Valid is false while the key never had a good value.
	Valid    bool
	LoadedAt time.Time
	// Error explains why the key's current value is not in force.
	Error string
}

// Set holds the configs under one prefix. It is safe for concurrent use.
type Set[T any] struct {
	prefix string
	log    *slog.Logger
	parse  func(key string, raw []byte) (T, error)
	now    func() time.Time

	keepDeleted bool

	mu   sync.Mutex
	raw  map[string][]byte
	good map[string]good[T]
	errs map[string]string
}

type good[T any] struct {
	value    T
	raw      []byte
	loadedAt time.Time
}

// New returns an empty Set for prefix (used in log lines). parse turns one
// key's raw value into a config or an error.
func New[T any](prefix string, log *slog.Logger, parse func(key string, raw []byte) (T, error)) *Set[T] {
	return &Set[T]{prefix: prefix, log: log, parse: parse, now: time.Now,
		raw: map[string][]byte{}, good: map[string]good[T]{}, errs: map[string]string{}}
}

// KeepDeleted makes a deleted key keep its last good value, with an error
// saying it was deleted; it returns s.
func (s *Set[T]) KeepDeleted() *Set[T] {
	s.keepDeleted = true
	return s
}

// DeletedError is the error of a deleted key kept by KeepDeleted.
const DeletedError = "deleted from Consul KV: the last good value keeps serving; write a new one to change it"

// Forget drops the last good value kept for a deleted key (KeepDeleted),
// when its owner has retired it; a key still in KV is not touched.
func (s *Set[T]) Forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.raw[key]; !ok {
		delete(s.good, key)
		delete(s.errs, key)
	}
}

// Update replaces the raw values (keyed by name under the prefix) and
// returns the new state of every key.
func (s *Set[T]) Update(raw map[string][]byte) map[string]Entry[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw = raw
	return s.evaluate()
}

// Reevaluate parses the rejected values again, for a parse function whose
// answer depends on more than the raw value: a config naming a version that
// registers later becomes good then. Values in force stay as they are.
func (s *Set[T]) Reevaluate() map[string]Entry[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evaluate()
}

func (s *Set[T]) evaluate() map[string]Entry[T] {
	for key := range s.good {
		if _, ok := s.raw[key]; !ok {
			if s.keepDeleted {
				if s.errs[key] != DeletedError {
					s.log.Error("config deleted; the last good value keeps serving", "key", s.prefix+key)
				}
				s.errs[key] = DeletedError
				continue
			}
			delete(s.good, key)
			s.log.Info("config removed", "key", s.prefix+key)
		}
	}
	for key := range s.errs {
		if _, ok := s.raw[key]; !ok && (!s.keepDeleted || s.errs[key] != DeletedError) {
			delete(s.errs, key)
		}
	}
	for key, raw := range s.raw {
		if g, ok := s.good[key]; ok && bytes.Equal(g.raw, raw) {
			delete(s.errs, key)
			continue
		}
		v, err := s.parse(key, raw)
		if err != nil {
			msg := err.Error()
			if s.errs[key] != msg {
				s.log.Error("config rejected; the last good value keeps serving", "key", s.prefix+key, "error", msg)
				s.errs[key] = msg
			}
			continue
		}
		s.good[key] = good[T]{value: v, raw: raw, loadedAt: s.now()}
		delete(s.errs, key)
		s.log.Info("config loaded", "key", s.prefix+key, "value", string(raw))
	}
	out := make(map[string]Entry[T], len(s.raw))
	for key, g := range s.good {
		out[key] = Entry[T]{Value: g.value, Valid: true, LoadedAt: g.loadedAt}
	}
	for key, msg := range s.errs {
		e := out[key]
		e.Error = msg
		out[key] = e
	}
	return out
}

// Names maps KV pairs directly under prefix (prefix + name, no deeper
// path) to their values.
func Names(prefix string, pairs api.KVPairs) map[string][]byte {
	raw := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		if name := strings.TrimPrefix(p.Key, prefix); name != "" && !strings.Contains(name, "/") {
			raw[name] = p.Value
		}
	}
	return raw
}

// MaxDocument bounds a config document (64 KiB).
const MaxDocument = 64 << 10

// DecodeStrict decodes one JSON document into v, refusing unknown fields,
// trailing data and documents over MaxDocument.
func DecodeStrict(raw []byte, v any) error {
	if len(raw) > MaxDocument {
		return fmt.Errorf("%d bytes, at most %d", len(raw), MaxDocument)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the document")
	}
	return nil
}
