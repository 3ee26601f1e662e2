// Package openapi embeds the OpenAPI (Swagger 2.0) document of the REST edge,
// generated from the protos and proto/http.yaml by `make generate`.
package openapi

import _ "embed"

// JSON is the OpenAPI document.
//
//go:embed adrank.swagger.json
var JSON []byte
