// Package inproc is featuresvc's API for use in process: the same feature
// serving as the service, called as a function (no network hop). A process
// that serves every model itself (routersvc --ml-service, the adrank
// library) links it instead of calling featuresvc.
package inproc

import (
	"github.com/adrank/adrank/featuresvc/internal/features"
	featuresv1 "github.com/adrank/adrank/gen/adrank/features/v1"
	"github.com/adrank/adrank/ml/world"
)

// New serves world w's features.
func New(w *world.World) featuresv1.FeatureServiceServer { return features.NewServer(w) }
