// Package inproc is rankersvc's API for use in process: the same scoring
// and checks as the service, called as functions (no network hop). A
// process that serves every model itself (routersvc --ml-service, the
// adrank library) links it instead of calling rankers.
package inproc

import (
	rankerv1 "github.com/adrank/adrank/gen/adrank/ranker/v1"
	"github.com/adrank/adrank/ml/model"
	"github.com/adrank/adrank/rankersvc/internal/ranker"
)

// New serves model file f as domain/version.
func New(domain, version string, f *model.File) rankerv1.RankerServiceServer {
	return ranker.NewServer(domain, version, f)
}
