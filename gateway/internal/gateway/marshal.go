package gateway

import (
	"bytes"
	"io"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"
)

// jsonMarshaler is grpc-gateway's JSONPb with a one-pass decoder. JSONPb
// first reads a body with encoding/json into a raw message and then parses
// it again with protojson; the body is already bounded (Options.MaxBody), so
// this reads it whole and parses it once. It is also stricter: anything after
// the JSON value is an error, where JSONPb ignores it.
type jsonMarshaler struct {
	runtime.JSONPb
}

// NewDecoder implements runtime.Marshaler.
func (m *jsonMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		msg, ok := v.(proto.Message)
		if !ok {
			return m.JSONPb.NewDecoder(r).Decode(v)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return io.EOF // as JSONPb: the handler then takes an empty message
		}
		return m.UnmarshalOptions.Unmarshal(b, msg)
	})
}
