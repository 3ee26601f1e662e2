// Package demo turns the seeded synthetic world into feature files: one
// Parquet file per entity of the demo spec, which featuresvc loads through
// the same validation and swap as anyone's files.
package demo

import (
	"bytes"
	"fmt"
	"math"

	"github.com/adrank/adrank/featuresvc/internal/table"
	"github.com/adrank/adrank/ml/featurespec"
	"github.com/adrank/adrank/ml/world"
)

// Rows returns the world's rows of entity e (user, ad or user_topic), filled
// with the features of e the world has; any other feature is missing.
func Rows(w *world.World, e *featurespec.Entity) (*table.Rows, error) {
	r := &table.Rows{Entity: e, Numeric: e.Numeric(), Strings: e.Strings()}
	add := func(key string, nums map[string]float64, strs map[string]string) {
		r.Keys = append(r.Keys, key)
		for _, f := range r.Numeric {
			v, ok := nums[f.Name]
			if !ok {
				v = math.NaN()
			}
			r.Nums = append(r.Nums, v)
		}
		for _, f := range r.Strings {
			r.Strs = append(r.Strs, strs[f.Name])
		}
	}
	switch e.Name {
	case featurespec.User:
		for _, u := range w.Users() {
			add(u.ID, world.UserFeatures(u), nil)
		}
	case featurespec.Ad:
		for _, d := range w.Config().Domains {
			for _, a := range w.Ads(d) {
				add(a.ID, world.AdFeatures(nil, a, world.Context{}), map[string]string{"topic": world.Topics[a.Topic]})
			}
		}
	case "user_topic":
		for _, u := range w.Users() {
			for t, topic := range world.Topics {
				add(table.Key(u.ID, topic), map[string]float64{world.FUserAdInterest: u.Interests[t]}, nil)
			}
		}
	default:
		return nil, fmt.Errorf("the synthetic world has no entity %q", e.Name)
	}
	return r, nil
}

// Parquet returns the world's rows of e as a Parquet file.
func Parquet(w *world.World, e *featurespec.Entity) ([]byte, error) {
	rows, err := Rows(w, e)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := table.WriteParquet(&buf, rows); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
