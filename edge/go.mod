module github.com/adrank/adrank/edge

go 1.26.8

require (
	github.com/adrank/adrank/auctionsvc v0.0.0
	github.com/adrank/adrank/ml v0.0.0
	github.com/adrank/adrank/platform v0.0.0
	github.com/tetratelabs/wazero v1.12.0
)

require golang.org/x/sys v0.49.0 // indirect

replace github.com/adrank/adrank/auctionsvc => ../auctionsvc

replace github.com/adrank/adrank/ml => ../ml

replace github.com/adrank/adrank/platform => ../platform

replace github.com/adrank/adrank/gen => ../gen
