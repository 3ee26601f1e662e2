package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"time"
)

// impV1 starts an impression in the compact encoding of the bbolt store;
// earlier versions wrote JSON, which starts with '{' and is still read.
const impV1 = 0x01

// appendImpression appends im in the compact encoding: a version byte,
// then its strings (length first) and numbers as varints, the propensity
// as 8 bytes. The ID is the key, so it is not repeated. About a third of
// the JSON's size.
func appendImpression(b []byte, im Impression) []byte {
	b = append(b, impV1)
	for _, s := range []string{im.RequestID, im.Domain, im.UserID, im.AdID, im.Version, im.Strategy, im.Experiment, im.Group} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(im.Propensity))
	b = binary.AppendVarint(b, int64(im.Slot))
	b = binary.AppendVarint(b, im.Price)
	at := int64(zeroTime) // the zero time is outside UnixNano's range
	if !im.At.IsZero() {
		at = im.At.UnixNano()
	}
	b = binary.AppendVarint(b, at)
	ope := byte(0)
	if im.OPE {
		ope = 1
	}
	return append(b, ope)
}

var errBadImpression = errors.New("store: malformed impression record")

// readImpression decodes a stored impression of key id, in either
// encoding; a malformed record is an error, never a panic.
func readImpression(id string, b []byte) (Impression, error) {
	var im Impression
	if len(b) > 0 && b[0] == '{' {
		err := json.Unmarshal(b, &im)
		return im, err
	}
	if len(b) == 0 || b[0] != impV1 {
		return im, errBadImpression
	}
	b = b[1:]
	im.ID = id
	for _, s := range []*string{&im.RequestID, &im.Domain, &im.UserID, &im.AdID, &im.Version, &im.Strategy, &im.Experiment, &im.Group} {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return Impression{}, errBadImpression
		}
		*s = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	if len(b) < 8 {
		return Impression{}, errBadImpression
	}
	im.Propensity = math.Float64frombits(binary.BigEndian.Uint64(b))
	b = b[8:]
	var ints [3]int64
	for i := range ints {
		v, k := binary.Varint(b)
		if k <= 0 {
			return Impression{}, errBadImpression
		}
		ints[i], b = v, b[k:]
	}
	if len(b) != 1 || b[0] > 1 || ints[0] < math.MinInt32 || ints[0] > math.MaxInt32 {
		return Impression{}, errBadImpression
	}
	im.Slot, im.Price, im.OPE = int(ints[0]), ints[1], b[0] == 1
	if ints[2] != zeroTime {
		im.At = time.Unix(0, ints[2]).UTC()
	}
	return im, nil
}

// zeroTime stands for the zero time.Time in the encoding.
const zeroTime = math.MinInt64
