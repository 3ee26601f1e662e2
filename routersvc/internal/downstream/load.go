package downstream

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/adrank/adrank/ml/featurespec"
	"github.com/adrank/adrank/ml/model"
)

// LoadModels adds a ranker for every model file dir/<domain>/<version>.json
// (feature spec files, *.features.json, are not models) and returns the
// domain/version pairs it served.
func (p *Local) LoadModels(dir string) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*", "*.json"))
	if err != nil {
		return nil, err
	}
	var served []string
	for _, path := range paths {
		if strings.HasSuffix(path, model.SpecSuffix) {
			continue
		}
		domain := filepath.Base(filepath.Dir(path))
		version := strings.TrimSuffix(filepath.Base(path), ".json")
		f, err := model.Load(path)
		if err != nil {
			return nil, err
		}
		if err := featurespec.Demo().CheckModel(path, f.Features()); err != nil {
			return nil, err
		}
		p.AddRanker(domain, version, f)
		served = append(served, domain+"/"+version)
	}
	if len(served) == 0 {
		return nil, fmt.Errorf("no model files under %s/<domain>/<version>.json", dir)
	}
	return served, nil
}
