// Package entry is the envelope readthrough writes around every cached value,
// and around the leases that guard a key while it loads.
//
// An entry is a fixed 24-byte header, an extension area, then the payload:
//
//	offset size field
//	0      1    magic 0xD7: not a JSON, text or gob first byte, so a foreign writer's bytes are rejected early
//	1      1    version (1)
//	2      1    kind: 1 value, 2 not-found, 3 lease
//	3      1    n, the length of the extension area
//	4      4    fingerprint of the value type (big-endian), so a Cache of another V never decodes it
//	8      8    written at, Unix nanoseconds (big-endian)
//	16     8    fresh until, Unix nanoseconds (big-endian)
//	24     n    extensions, each a tag, a length and that many bytes; a reader skips tags it does not know
//	24+n   ...  payload: the codec's bytes (empty for not-found; the lease token for a lease)
//
// The first extension is always the check (tag 4): the entry's total length
// and a CRC-32C of the whole entry with those 8 bytes zeroed. A cut-short or
// corrupted entry fails it and is a miss; so is an entry without it (written
// before it existed), which the next load overwrites. Readers that predate
// the check skip it, as they skip every tag they do not know, so entries
// stay readable both ways during a rolling upgrade; a lease entry is a kind
// they reject, that is, a miss.
package entry

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
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
	// Lease marks a key that one flight is loading: its payload is the
	// lease token. It lives for the lease's TTL unless kept alive.
	Lease Kind = 3
)

const (
	magic      = 0xD7
	version    = 1
	headerSize = 24
	checkSize  = 2 + 8 // tag, length, total length, CRC
	// TokenSize is the length of a lease token.
	TokenSize = 16
)

// Extension tags. Each extension is a tag byte, a length byte, then that
// many bytes.
const (
	extLoadDuration = 1 // int64 ns: how long the load took (XFetch's Δ)
	extStaleUntil   = 2 // int64 Unix ns: the bytes are kept in the store until then
	extFlags        = 3 // one byte, see flagRearmed
	extCheck        = 4 // uint32 total length, uint32 CRC-32C
	extOrigFresh    = 5 // int64 Unix ns: a re-armed value's fresh-until before re-arming
	extLease        = 6 // token, then int64 Unix ns until when the lease holds
)

const flagRearmed = 1

// ErrCorrupt is returned for bytes that are not a well-formed entry.
var ErrCorrupt = errors.New("readthrough: corrupt cache entry")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Entry is a decoded envelope.
type Entry struct {
	Kind       Kind
	Type       uint32    // fingerprint of the value type
	WrittenAt  time.Time // when the load that produced it finished (a lease: when it was taken)
	FreshUntil time.Time // a value or not-found is fresh until then

	// StaleUntil is how long the writer keeps the bytes in the store past
	// FreshUntil (its stale window); zero when it keeps none.
	StaleUntil time.Time
	// LoadDuration is how long the load that wrote the value took.
	LoadDuration time.Duration
	// Rearmed marks a value written back by fail-safe after a failed
	// load: fresh again only for the throttle. OrigFreshUntil is when it
	// was fresh until before that.
	Rearmed        bool
	OrigFreshUntil time.Time
	// LeaseToken and LeaseUntil: the flight that holds the key's lease
	// and until when, for a value being refreshed (kind Value) or a lease
	// entry (kind Lease, whose LeaseUntil is informational: its TTL in the
	// store is what ends it).
	LeaseToken []byte
	LeaseUntil time.Time

	// Unknown holds extensions this version does not know, kept so that
	// re-encoding (to embed a lease) loses nothing a newer writer added.
	Unknown []byte
	Payload []byte // the codec's bytes (aliases the input on Decode)
}

// Fresh reports whether a value or not-found may be served as fresh at now.
func (e *Entry) Fresh(now time.Time) bool { return now.Before(e.FreshUntil) }

// Leased reports whether the entry carries a lease that holds at now.
func (e *Entry) Leased(now time.Time) bool {
	return e.Kind == Lease || len(e.LeaseToken) != 0 && now.Before(e.LeaseUntil)
}

// Encode returns the bytes of e, in one allocation.
func Encode(e *Entry) []byte {
	n := checkSize + len(e.Unknown)
	if e.LoadDuration > 0 {
		n += 10
	}
	if !e.StaleUntil.IsZero() {
		n += 10
	}
	if e.Rearmed {
		n += 3 + 10
	}
	embedLease := len(e.LeaseToken) != 0 && e.Kind != Lease // a lease entry's token is its payload
	if embedLease {
		n += 2 + len(e.LeaseToken) + 8
	}
	if n > 255 {
		// Only Unknown can grow this far; drop it rather than write a
		// header that lies.
		n -= len(e.Unknown)
		e = &Entry{Kind: e.Kind, Type: e.Type, WrittenAt: e.WrittenAt, FreshUntil: e.FreshUntil, StaleUntil: e.StaleUntil,
			LoadDuration: e.LoadDuration, Rearmed: e.Rearmed, OrigFreshUntil: e.OrigFreshUntil,
			LeaseToken: e.LeaseToken, LeaseUntil: e.LeaseUntil, Payload: e.Payload}
	}
	b := make([]byte, headerSize, headerSize+n+len(e.Payload))
	b[0], b[1], b[2], b[3] = magic, version, byte(e.Kind), byte(n)
	binary.BigEndian.PutUint32(b[4:], e.Type)
	binary.BigEndian.PutUint64(b[8:], uint64(e.WrittenAt.UnixNano()))
	binary.BigEndian.PutUint64(b[16:], uint64(e.FreshUntil.UnixNano()))
	b = append(b, extCheck, 8, 0, 0, 0, 0, 0, 0, 0, 0)
	if e.LoadDuration > 0 {
		b = appendInt64(b, extLoadDuration, int64(e.LoadDuration))
	}
	if !e.StaleUntil.IsZero() {
		b = appendInt64(b, extStaleUntil, e.StaleUntil.UnixNano())
	}
	if e.Rearmed {
		b = append(b, extFlags, 1, flagRearmed)
		b = appendInt64(b, extOrigFresh, e.OrigFreshUntil.UnixNano())
	}
	if embedLease {
		b = append(b, extLease, byte(len(e.LeaseToken)+8))
		b = append(b, e.LeaseToken...)
		b = binary.BigEndian.AppendUint64(b, uint64(e.LeaseUntil.UnixNano()))
	}
	b = append(b, e.Unknown...)
	b = append(b, e.Payload...)
	binary.BigEndian.PutUint32(b[headerSize+2:], uint32(len(b)))
	binary.BigEndian.PutUint32(b[headerSize+6:], checksum(b))
	return b
}

func appendInt64(b []byte, tag byte, v int64) []byte {
	b = append(b, tag, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

// zero8 stands for the check's own bytes in its checksum: a package-level
// array, since a local one would escape to the heap through crc32.Update.
var zero8 [8]byte

// checksum is the CRC-32C of b with the check's own 8 bytes read as zero.
func checksum(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b[:headerSize+2])
	c = crc32.Update(c, castagnoli, zero8[:])
	return crc32.Update(c, castagnoli, b[headerSize+checkSize:])
}

// Decode parses b. Anything that is not a whole entry this version can read
// returns ErrCorrupt; callers treat that as a miss. The payload aliases b.
func Decode(b []byte) (Entry, error) {
	if len(b) < headerSize+checkSize || b[0] != magic || b[1] != version {
		return Entry{}, ErrCorrupt
	}
	k := Kind(b[2])
	if k != Value && k != NotFound && k != Lease {
		return Entry{}, ErrCorrupt
	}
	end := headerSize + int(b[3])
	if end > len(b) || b[headerSize] != extCheck || b[headerSize+1] != 8 || end < headerSize+checkSize {
		return Entry{}, ErrCorrupt
	}
	if int(binary.BigEndian.Uint32(b[headerSize+2:])) != len(b) ||
		binary.BigEndian.Uint32(b[headerSize+6:]) != checksum(b) {
		return Entry{}, ErrCorrupt
	}
	e := Entry{
		Kind:       k,
		Type:       binary.BigEndian.Uint32(b[4:]),
		WrittenAt:  time.Unix(0, int64(binary.BigEndian.Uint64(b[8:]))),
		FreshUntil: time.Unix(0, int64(binary.BigEndian.Uint64(b[16:]))),
		Payload:    b[end:],
	}
	ext := b[headerSize+checkSize : end]
	for len(ext) > 0 {
		if len(ext) < 2 || 2+int(ext[1]) > len(ext) {
			return Entry{}, ErrCorrupt
		}
		tag, d := ext[0], ext[2:2+int(ext[1])]
		switch {
		case tag == extLoadDuration && len(d) == 8:
			e.LoadDuration = time.Duration(binary.BigEndian.Uint64(d))
		case tag == extStaleUntil && len(d) == 8:
			e.StaleUntil = time.Unix(0, int64(binary.BigEndian.Uint64(d)))
		case tag == extFlags && len(d) == 1:
			e.Rearmed = d[0]&flagRearmed != 0
		case tag == extOrigFresh && len(d) == 8:
			e.OrigFreshUntil = time.Unix(0, int64(binary.BigEndian.Uint64(d)))
		case tag == extLease && len(d) > 8 && k == Value:
			e.LeaseToken = d[: len(d)-8 : len(d)-8]
			e.LeaseUntil = time.Unix(0, int64(binary.BigEndian.Uint64(d[len(d)-8:])))
		case tag <= extLease && tag != extLease:
			return Entry{}, ErrCorrupt // a known tag of the wrong size
		default:
			e.Unknown = append(e.Unknown, ext[:2+len(d)]...)
		}
		ext = ext[2+len(d):]
	}
	switch {
	case k == NotFound && len(e.Payload) != 0,
		k == Lease && len(e.Payload) != TokenSize,
		k != Lease && e.FreshUntil.Before(e.WrittenAt),
		e.Rearmed && e.OrigFreshUntil.IsZero():
		return Entry{}, ErrCorrupt
	}
	if k == Lease {
		e.LeaseToken, e.LeaseUntil = e.Payload, e.FreshUntil
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
