module github.com/adrank/adrank/adrankctl

go 1.26.8

require github.com/adrank/adrank/ml v0.0.0

replace github.com/adrank/adrank/ml => ../ml
