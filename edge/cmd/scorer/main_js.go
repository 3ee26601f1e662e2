//go:build js && wasm

// Command scorer is the edge bundle's WebAssembly module (GOOS=js
// GOARCH=wasm, run by Go's wasm_exec.js). It sets globalThis.adrankEdge:
//
//	load(version, modelBytes, specJSON) -> "" or an error
//	rank(requestJSON) -> responseJSON (or {"error": ...})
//	assign(planJSON, userID) -> assignmentJSON
package main

import (
	"encoding/json"
	"syscall/js"

	"github.com/adrank/adrank/edge/internal/rank"
)

func main() {
	var ranker *rank.Ranker
	api := map[string]any{
		"load": js.FuncOf(func(_ js.Value, args []js.Value) any {
			if len(args) < 2 {
				return "load(version, modelBytes[, specJSON])"
			}
			data := make([]byte, args[1].Get("length").Int())
			js.CopyBytesToGo(data, args[1])
			var spec []string
			if len(args) > 2 && args[2].Type() == js.TypeString && args[2].String() != "" {
				if err := json.Unmarshal([]byte(args[2].String()), &spec); err != nil {
					return "feature spec: " + err.Error()
				}
			}
			r, err := rank.Load(args[0].String(), data, spec)
			if err != nil {
				return err.Error()
			}
			ranker = r
			return ""
		}),
		"rank": js.FuncOf(func(_ js.Value, args []js.Value) any {
			if ranker == nil {
				return `{"error":"no model loaded"}`
			}
			return string(ranker.Call([]byte(args[0].String())))
		}),
		"assign": js.FuncOf(func(_ js.Value, args []js.Value) any {
			return string(rank.AssignJSON([]byte(args[0].String()), args[1].String()))
		}),
	}
	js.Global().Set("adrankEdge", js.ValueOf(api))
	select {} // serve calls until the page goes away
}
