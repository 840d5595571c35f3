package fakemomento

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The service speaks protobuf on the wire, but this package has no
// generated code: requests are decoded and responses encoded by hand with
// protowire, from the field numbers of Momento's public .proto files. The
// server's codec hands handlers the raw message bytes.

// rawCodec is a gRPC codec that passes message bytes through untouched.
// It registers as "proto", the content subtype the SDK sends.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("fakemomento: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("fakemomento: cannot unmarshal into %T", v)
	}
	*m = append((*m)[:0], data...)
	return nil
}

// field is one occurrence of a field in a decoded message: varint fields
// carry n, length-delimited ones carry b.
type field struct {
	n uint64
	b []byte
}

// message is a decoded protobuf message: every occurrence of every field,
// by number, in order.
type message map[protowire.Number][]field

// decode parses b as a protobuf message. It keeps varint and
// length-delimited fields (the only kinds Momento's messages use here) and
// skips the others.
func decode(b []byte) (message, error) {
	m := message{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		var f field
		switch typ {
		case protowire.VarintType:
			f.n, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.VarintType || typ == protowire.BytesType {
			m[num] = append(m[num], f)
		}
	}
	return m, nil
}

// has reports whether field num occurs: how a oneof's case is told, since
// an empty submessage is still sent.
func (m message) has(num protowire.Number) bool { return len(m[num]) > 0 }

// bytes returns the last occurrence of a length-delimited field (proto3:
// the last one wins), or nil when absent (the default, empty).
func (m message) bytes(num protowire.Number) []byte {
	fs := m[num]
	if len(fs) == 0 {
		return nil
	}
	return fs[len(fs)-1].b
}

// str is bytes as a string.
func (m message) str(num protowire.Number) string { return string(m.bytes(num)) }

// uint returns the last occurrence of a varint field, or 0 when absent.
func (m message) uint(num protowire.Number) uint64 {
	fs := m[num]
	if len(fs) == 0 {
		return 0
	}
	return fs[len(fs)-1].n
}

// sub decodes the last occurrence of a submessage field; absent is empty.
func (m message) sub(num protowire.Number) (message, error) { return decode(m.bytes(num)) }

// all returns every occurrence of a repeated length-delimited field.
func (m message) all(num protowire.Number) [][]byte {
	out := make([][]byte, 0, len(m[num]))
	for _, f := range m[num] {
		out = append(out, f.b)
	}
	return out
}

// appendBytes appends a length-delimited field. proto3 omits empty scalar
// bytes, but an empty submessage (a oneof case) must still be written:
// callers pass always for those.
func appendBytes(b []byte, num protowire.Number, v []byte, always bool) []byte {
	if len(v) == 0 && !always {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// appendUint appends a varint field, omitted when zero as proto3 does.
func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}
