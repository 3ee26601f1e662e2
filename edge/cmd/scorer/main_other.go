//go:build !(js && wasm)

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "scorer runs in a browser: build it with GOOS=js GOARCH=wasm (make build does)")
	os.Exit(2)
}
