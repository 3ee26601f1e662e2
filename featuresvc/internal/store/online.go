package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/adrank/adrank/featuresvc/internal/table"
	"github.com/adrank/adrank/ml/featurespec"
)

// Limits on online writes.
const (
	MaxPutRows = 1000 // rows per Put
	// MaxOnlineRows bounds each entity's online rows; a snapshot that
	// supersedes them frees them.
	MaxOnlineRows = 1_000_000
)

// Update is one key's online write: the features it sets.
type Update struct {
	Key       []string // the entity's key parts, in spec order
	Nums      map[string]float64
	Strs      map[string]string
	EventTime time.Time // zero: now
}

// Put implements Store.
func (s *Bolt) Put(_ context.Context, entityName string, ups []Update) error {
	now := s.now()
	e, keys, err := s.ents.forUpdates(s.spec, entityName, ups, now)
	if err != nil {
		return err
	}
	s.load.Lock() // writers one at a time: no swap or write in between
	defer s.load.Unlock()
	e.mu.RLock() // readers go on while the writes are prepared and stored
	sn := e.snap.Load()
	var asOf time.Time
	if sn != nil {
		asOf = sn.AsOf
	}
	next := applyUpdates(ups, keys, asOf, now, func(key string) (onlineRecord, bool) {
		if r := e.online[key]; r != nil && !sn.supersedes(r.rec) {
			return r.rec, true
		}
		return onlineRecord{}, false
	})
	added := 0
	for k := range next {
		if e.online[k] == nil {
			added++
		}
	}
	held := len(e.online)
	e.mu.RUnlock()
	if held+added > MaxOnlineRows {
		return fmt.Errorf("%w: entity %s holds %d online rows, at most %d: load a snapshot that includes them", ErrFull, e.spec.Name, held, MaxOnlineRows)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bOnline).CreateBucketIfNotExists([]byte(e.spec.Name))
		if err != nil {
			return err
		}
		for k, rec := range next {
			raw, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(k), raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("entity %s: writing online rows: %w", e.spec.Name, err)
	}
	e.mu.Lock()
	for k, rec := range next {
		e.online[k] = e.merge(sn, k, rec)
	}
	e.mu.Unlock()
	return nil
}

// ErrFull is returned when an entity's online rows are at their bound.
var ErrFull = fmt.Errorf("online rows full")

// validateUpdates checks updates of entity e against the spec and returns
// each one's key; the error names every bad update and field.
func validateUpdates(e *featurespec.Entity, ups []Update, now time.Time) ([]string, error) {
	if len(ups) == 0 || len(ups) > MaxPutRows {
		return nil, fmt.Errorf("rows: %d rows, want 1 to %d", len(ups), MaxPutRows)
	}
	errs := &table.Errors{}
	keys := make([]string, len(ups))
	for i, u := range ups {
		row := i + 1
		if len(u.Key) != len(e.Keys) {
			errs.List = append(errs.List, table.RowError{Row: row, Field: "key", Msg: fmt.Sprintf("%d parts, entity %s has keys %v", len(u.Key), e.Name, e.Keys)})
			continue
		}
		for j, k := range u.Key {
			if k == "" {
				errs.List = append(errs.List, table.RowError{Row: row, Field: e.Keys[j], Msg: "key is empty"})
			} else if err := table.CheckText(k, featurespec.MaxKeyBytes); err != nil {
				errs.List = append(errs.List, table.RowError{Row: row, Field: e.Keys[j], Msg: err.Error()})
			}
		}
		keys[i] = table.Key(u.Key...)
		if len(u.Nums)+len(u.Strs) == 0 {
			errs.List = append(errs.List, table.RowError{Row: row, Field: "values", Msg: "no feature set"})
		}
		for name, v := range u.Nums {
			f := e.Feature(name)
			switch {
			case f == nil:
				errs.List = append(errs.List, table.RowError{Row: row, Field: name, Msg: "not a feature of entity " + e.Name})
			case f.Type == featurespec.String:
				errs.List = append(errs.List, table.RowError{Row: row, Field: name, Msg: "a number where a string is declared"})
			default:
				if _, err := table.Numeric(f, true, v); err != nil {
					errs.List = append(errs.List, table.RowError{Row: row, Field: name, Msg: err.Error()})
				}
			}
		}
		for name, v := range u.Strs {
			f := e.Feature(name)
			switch {
			case f == nil:
				errs.List = append(errs.List, table.RowError{Row: row, Field: name, Msg: "not a feature of entity " + e.Name})
			case f.Type != featurespec.String:
				errs.List = append(errs.List, table.RowError{Row: row, Field: name, Msg: "a string where a number is declared"})
			case v == "":
				errs.List = append(errs.List, table.RowError{Row: row, Field: name, Msg: "empty"})
			default:
				if err := table.CheckText(v, featurespec.MaxStringBytes); err != nil {
					errs.List = append(errs.List, table.RowError{Row: row, Field: name, Msg: err.Error()})
				}
			}
		}
		if t := u.EventTime; !t.IsZero() && t.After(now.Add(time.Hour)) {
			errs.List = append(errs.List, table.RowError{Row: row, Field: "event_time", Msg: fmt.Sprintf("%s is more than an hour in the future", t.UTC().Format(time.RFC3339))})
		}
	}
	if len(errs.List) > 0 {
		errs.Total = len(errs.List)
		if len(errs.List) > table.MaxListed {
			errs.List = errs.List[:table.MaxListed]
		}
		return nil, errs
	}
	return keys, nil
}

// applyUpdates merges updates into their keys' online records: prev is a
// key's record before, asOf the serving snapshot's (zero: none). It returns
// the records that change.
func applyUpdates(ups []Update, keys []string, asOf, now time.Time, prev func(key string) (onlineRecord, bool)) map[string]onlineRecord {
	next := map[string]onlineRecord{}
	for i, u := range ups {
		t := u.EventTime
		if t.IsZero() {
			t = now
		}
		if !asOf.IsZero() && !t.After(asOf) {
			continue // the serving snapshot already describes a later time
		}
		rec, ok := next[keys[i]]
		if !ok {
			if r, ok := prev(keys[i]); ok {
				rec = onlineRecord{EventTime: r.EventTime, Nums: maps.Clone(r.Nums), Missing: slices.Clone(r.Missing), Strs: maps.Clone(r.Strs)}
			}
		}
		if t.Before(rec.EventTime) {
			continue // last write wins, by event time
		}
		rec.EventTime = t.UTC()
		if rec.Nums == nil && len(u.Nums) > 0 {
			rec.Nums = map[string]float64{}
		}
		if rec.Strs == nil && len(u.Strs) > 0 {
			rec.Strs = map[string]string{}
		}
		for name, v := range u.Nums {
			rec.Missing = slices.DeleteFunc(rec.Missing, func(m string) bool { return m == name })
			if math.IsNaN(v) { // valid only where the policy serves NaN
				delete(rec.Nums, name)
				rec.Missing = append(rec.Missing, name)
				continue
			}
			rec.Nums[name] = v
		}
		maps.Copy(rec.Strs, u.Strs)
		next[keys[i]] = rec
	}
	return next
}
