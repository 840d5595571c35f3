package readthrough

import (
	"encoding/json"
	"reflect"
)

// Codec turns values into the bytes a [Store] keeps, and back.
//
// Unmarshal may keep the slice it is given: the cache never reuses it.
// An Unmarshal error makes the entry a miss, so a codec should reject
// bytes it does not recognise rather than return a zero value.
// Implementations must be safe for concurrent use.
type Codec[V any] interface {
	Marshal(V) ([]byte, error)
	Unmarshal([]byte) (V, error)
}

// JSONCodec encodes values with encoding/json. It is the default for every
// value type except []byte and string, which default to the raw codecs.
func JSONCodec[V any]() Codec[V] { return jsonCodec[V]{} }

type jsonCodec[V any] struct{}

func (jsonCodec[V]) Marshal(v V) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec[V]) Unmarshal(b []byte) (V, error) {
	var v V
	err := json.Unmarshal(b, &v)
	return v, err
}

// BytesCodec stores []byte values as they are, with no encoding.
func BytesCodec() Codec[[]byte] { return bytesCodec{} }

type bytesCodec struct{}

func (bytesCodec) Marshal(v []byte) ([]byte, error) { return v, nil }

// Unmarshal returns b itself, the bytes the store returned. Callers that
// share a flight, or a near copy, get the same slice: treat it as
// read-only, as any value a Cache returns.
func (bytesCodec) Unmarshal(b []byte) ([]byte, error) { return b, nil }

// StringCodec stores string values as their bytes, with no encoding.
func StringCodec() Codec[string] { return stringCodec{} }

type stringCodec struct{}

func (stringCodec) Marshal(v string) ([]byte, error)   { return []byte(v), nil }
func (stringCodec) Unmarshal(b []byte) (string, error) { return string(b), nil }

// defaultCodec picks the raw codec for []byte and string, JSON otherwise.
func defaultCodec[V any]() Codec[V] {
	switch reflect.TypeFor[V]() {
	case reflect.TypeFor[[]byte]():
		return any(BytesCodec()).(Codec[V])
	case reflect.TypeFor[string]():
		return any(StringCodec()).(Codec[V])
	}
	return JSONCodec[V]()
}
