// Command scorer-wasi is the edge scorer for non-browser runtimes (built
// with GOOS=wasip1 GOARCH=wasm; it runs natively too): it loads a model
// file and answers one JSON request per stdin line with one JSON response
// per stdout line, by the same code as the browser's module.
//
//	scorer-wasi VERSION MODEL [SPEC]
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/adrank/adrank/edge/internal/rank"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scorer-wasi:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) < 3 {
		return fmt.Errorf("usage: scorer-wasi VERSION MODEL [SPEC]")
	}
	data, err := os.ReadFile(os.Args[2])
	if err != nil {
		return err
	}
	var spec []string
	if len(os.Args) > 3 {
		b, err := os.ReadFile(os.Args[3])
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &spec); err != nil {
			return fmt.Errorf("spec: %w", err)
		}
	}
	r, err := rank.Load(os.Args[1], data, spec)
	if err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		out.Write(r.Call(in.Bytes()))
		out.WriteByte('\n')
	}
	return in.Err()
}
