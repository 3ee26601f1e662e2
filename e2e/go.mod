module github.com/adrank/adrank/e2e

go 1.26.8

require (
	github.com/adrank/adrank/gen v0.0.0
	github.com/adrank/adrank/ml v0.0.0
	github.com/adrank/adrank/platform v0.0.0
)

replace github.com/adrank/adrank/gen => ../gen

replace github.com/adrank/adrank/platform => ../platform

replace github.com/adrank/adrank/ml => ../ml
