// Package store is featuresvc's feature store: per entity, one complete
// snapshot version serving at a time, swapped atomically for the next, and
// online writes layered over it. Two backends: Bolt, one bbolt file served
// from memory (the default: a restarted featuresvc serves what it served
// before), and Redis, shared by several featuresvc replicas. Both pass the
// same acceptance suite.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/adrank/adrank/featuresvc/internal/table"
	"github.com/adrank/adrank/ml/featurespec"
)

// Store is a feature store backend. It is safe for concurrent use.
type Store interface {
	Spec() *featurespec.Spec
	// View captures the serving snapshots: a request that reads all its
	// rows through one View reads each entity from a single snapshot
	// version, never a mix of two, however a swap falls.
	View(ctx context.Context) (View, error)
	// Swap makes rows their entity's serving snapshot, atomically: written
	// whole, then made current; until Swap returns, the previous one
	// serves. asOf is the time the rows describe (zero: now); online
	// writes with a later event time stay in force over the new snapshot,
	// older ones are dropped.
	Swap(ctx context.Context, rows *table.Rows, asOf time.Time, source string) (Meta, error)
	// Put validates every update against the spec and, only if all are
	// valid, applies them: each key's row then serves its written features
	// over its snapshot row. An update older than the key's last write, or
	// than the serving snapshot's as_of, changes nothing. Errors name the
	// update and the field (*table.Errors), or are ErrUnknownEntity or
	// ErrFull.
	Put(ctx context.Context, entity string, ups []Update) error
	// Status is every entity's serving state, in spec order.
	Status(ctx context.Context) ([]Status, error)
	Close() error
}

// View reads rows from the snapshots it captured.
type View interface {
	// Get looks keys of one entity up into rows and found (each at least
	// len(keys) long): a key's online writes over its snapshot row; found
	// is false for a key the store has never seen.
	Get(ctx context.Context, entity string, keys []string, rows []Row, found []bool) error
}

// Meta describes a snapshot version.
type Meta struct {
	Version  uint64    `json:"version"`
	Rows     int       `json:"rows"`
	AsOf     time.Time `json:"asOf"`
	LoadedAt time.Time `json:"loadedAt"`
	Source   string    `json:"source"`
	// Previous is the version this one replaced.
	Previous uint64 `json:"previous,omitempty"`
}

// Row is one key's serving values, in the order of the entity's Numeric and
// Strings features. Its slices are shared: read them, never write.
type Row struct {
	Nums []float64
	Strs []string
}

// Status is one entity's serving state.
type Status struct {
	Entity   string
	Snapshot *Meta // nil before the first snapshot
	// OnlineRows are the keys with online writes held: those the serving
	// snapshot superseded are held until the next load, for requests that
	// still read the snapshot before.
	OnlineRows int
}

// onlineRecord is what is stored of a key's online writes: the latest value
// of each feature written, and the latest event time.
type onlineRecord struct {
	EventTime time.Time          `json:"t"`
	Nums      map[string]float64 `json:"n,omitempty"`
	Missing   []string           `json:"m,omitempty"` // numbers written as missing (NaN)
	Strs      map[string]string  `json:"s,omitempty"`
}

// ErrUnknownEntity is returned for an entity the spec does not declare.
var ErrUnknownEntity = errors.New("unknown entity")

// Get looks one key up through a fresh view: for tests and single reads.
func Get(ctx context.Context, s Store, entity, key string) (Row, bool, error) {
	v, err := s.View(ctx)
	if err != nil {
		return Row{}, false, err
	}
	rows, found := make([]Row, 1), make([]bool, 1)
	err = v.Get(ctx, entity, []string{key}, rows, found)
	return rows[0], found[0], err
}

// entities are a spec's entities by name, with their encodings.
type entities map[string]*entity

func newEntities(spec *featurespec.Spec) entities {
	out := entities{}
	for _, e := range spec.Entities {
		out[e.Name] = &entity{spec: e, numeric: e.Numeric(), strs: e.Strings(), online: map[string]*onlineRow{}}
	}
	return out
}

func (es entities) get(spec *featurespec.Spec, name string) (*entity, error) {
	e, ok := es[name]
	if !ok {
		var names []string
		for _, e := range spec.Entities {
			names = append(names, e.Name)
		}
		return nil, fmt.Errorf("%w %q (the spec declares %s)", ErrUnknownEntity, name, strings.Join(names, ", "))
	}
	return e, nil
}

// forRows is the entity of rows read against this spec.
func (es entities) forRows(spec *featurespec.Spec, rows *table.Rows) (*entity, error) {
	e, err := es.get(spec, rows.Entity.Name)
	if err == nil && rows.Entity != e.spec {
		err = fmt.Errorf("entity %s: rows were read against another spec", e.spec.Name)
	}
	return e, err
}

// forUpdates is the named entity and the key of each of ups, once ups are
// valid.
func (es entities) forUpdates(spec *featurespec.Spec, name string, ups []Update, now time.Time) (*entity, []string, error) {
	e, err := es.get(spec, name)
	if err != nil {
		return nil, nil, err
	}
	keys, err := validateUpdates(e.spec, ups, now)
	return e, keys, err
}
