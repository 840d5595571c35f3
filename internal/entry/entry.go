// Package entry is the envelope readthrough writes around every cached value.
//
// An entry is a fixed 24-byte header, an optional extension area, then the
// codec's bytes:
//
//	offset size field
//	0      1    magic 0xD7: not a JSON, text or gob first byte, so a foreign writer's bytes are rejected early
//	1      1    version (1)
//	2      1    kind: 1 value, 2 not-found
//	3      1    n, the length of the extension area
//	4      4    fingerprint of the value type (big-endian), so a Cache of another V never decodes it
//	8      8    written at, Unix nanoseconds (big-endian)
//	16     8    fresh until, Unix nanoseconds (big-endian)
//	24     n    extensions: later fields (stale-until, load duration, ...) as tag, length, bytes;
//	            a reader skips what it does not know, so adding them breaks no reader
//	24+n   ...  payload: the codec's bytes (empty for not-found)
//
// Decoding never allocates: the payload and extensions alias the input.
package entry

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"reflect"
	"time"
)

// Kind says what an entry holds.
type Kind uint8

const (
	// Value is a loaded value.
	Value Kind = 1
	// NotFound records that the upstream had nothing for the key.
	NotFound Kind = 2
)

const (
	magic      = 0xD7
	version    = 1
	headerSize = 24
)

// ErrCorrupt is returned for bytes that are not a well-formed entry.
var ErrCorrupt = errors.New("readthrough: corrupt cache entry")

// Entry is a decoded envelope.
type Entry struct {
	Kind       Kind
	Type       uint32    // fingerprint of the value type
	WrittenAt  time.Time // when the load that produced it finished
	FreshUntil time.Time // after it the entry is a miss
	Ext        []byte    // extension area (aliases the input)
	Payload    []byte    // codec bytes (aliases the input)
}

// Fresh reports whether the entry may be served at now.
func (e *Entry) Fresh(now time.Time) bool { return now.Before(e.FreshUntil) }

// Encode returns the envelope for e followed by e.Payload, in one allocation.
func Encode(e Entry) []byte {
	b := make([]byte, headerSize+len(e.Ext)+len(e.Payload))
	b[0] = magic
	b[1] = version
	b[2] = byte(e.Kind)
	b[3] = byte(len(e.Ext))
	binary.BigEndian.PutUint32(b[4:], e.Type)
	binary.BigEndian.PutUint64(b[8:], uint64(e.WrittenAt.UnixNano()))
	binary.BigEndian.PutUint64(b[16:], uint64(e.FreshUntil.UnixNano()))
	n := copy(b[headerSize:], e.Ext)
	copy(b[headerSize+n:], e.Payload)
	return b
}

// Decode parses b. Anything that is not an entry this version can read
// returns ErrCorrupt; callers treat that as a miss.
func Decode(b []byte) (Entry, error) {
	if len(b) < headerSize || b[0] != magic || b[1] != version {
		return Entry{}, ErrCorrupt
	}
	k := Kind(b[2])
	if k != Value && k != NotFound {
		return Entry{}, ErrCorrupt
	}
	end := headerSize + int(b[3])
	if end > len(b) {
		return Entry{}, ErrCorrupt
	}
	e := Entry{
		Kind:       k,
		Type:       binary.BigEndian.Uint32(b[4:]),
		WrittenAt:  time.Unix(0, int64(binary.BigEndian.Uint64(b[8:]))),
		FreshUntil: time.Unix(0, int64(binary.BigEndian.Uint64(b[16:]))),
		Ext:        b[headerSize:end:end],
		Payload:    b[end:],
	}
	if k == NotFound && len(e.Payload) != 0 {
		return Entry{}, ErrCorrupt
	}
	if e.FreshUntil.Before(e.WrittenAt) {
		return Entry{}, ErrCorrupt
	}
	return e, nil
}

// TypeOf fingerprints T by its full name (package path and type), so
// entries survive a restart but not a change of value type.
func TypeOf[T any]() uint32 {
	h := fnv.New32a()
	t := reflect.TypeFor[T]()
	if t.PkgPath() != "" {
		h.Write([]byte(t.PkgPath()))
		h.Write([]byte{'.'})
	}
	h.Write([]byte(t.String()))
	return h.Sum32()
}

// Extension tags. Each extension is a tag byte, a length byte, then that
// many bytes; readers skip tags they do not know.
const (
	// ExtLoadDuration: how long the load took, int64 nanoseconds (XFetch's Δ).
	ExtLoadDuration = 1
	// ExtStaleUntil: until when the bytes may be served at all, stale
	// included (stale-while-revalidate, fail-safe), Unix nanoseconds.
	ExtStaleUntil = 2
	// ExtFlags: one byte of flags, see FlagRearmed.
	ExtFlags = 3
)

// FlagRearmed marks an entry written back by fail-safe: an expired value
// made fresh again for a short while because its reload failed.
const FlagRearmed = 1

// AppendInt64 appends an extension holding v.
func AppendInt64(ext []byte, tag byte, v int64) []byte {
	ext = append(ext, tag, 8)
	return binary.BigEndian.AppendUint64(ext, uint64(v))
}

// AppendByte appends an extension holding b.
func AppendByte(ext []byte, tag, b byte) []byte {
	return append(ext, tag, 1, b)
}

// Find returns the data of the first extension with tag, or nil.
func Find(ext []byte, tag byte) []byte {
	for len(ext) >= 2 {
		t, n := ext[0], int(ext[1])
		if 2+n > len(ext) {
			return nil
		}
		if t == tag {
			return ext[2 : 2+n]
		}
		ext = ext[2+n:]
	}
	return nil
}

// Int64 returns the int64 extension with tag, if present and well-formed.
func (e *Entry) Int64(tag byte) (int64, bool) {
	d := Find(e.Ext, tag)
	if len(d) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(d)), true
}

// Flags returns the entry's flags byte, zero if absent.
func (e *Entry) Flags() byte {
	if d := Find(e.Ext, ExtFlags); len(d) == 1 {
		return d[0]
	}
	return 0
}
