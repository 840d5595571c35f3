package entry

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
	"time"
)

var now = time.Unix(1_700_000_000, 123456789)

func samples() []Entry {
	return []Entry{
		{Kind: Value, Type: 7, WrittenAt: now, FreshUntil: now.Add(time.Minute), Payload: []byte(`{"a":1}`)},
		{Kind: NotFound, Type: 7, WrittenAt: now, FreshUntil: now.Add(time.Second)},
		{Kind: Value, Type: 1, WrittenAt: now, FreshUntil: now, Payload: []byte("x"),
			LoadDuration: 250 * time.Millisecond, StaleUntil: now.Add(time.Hour)},
		{Kind: Value, Type: 1, WrittenAt: now, FreshUntil: now.Add(time.Second), Payload: []byte("re-armed"),
			Rearmed: true, OrigFreshUntil: now.Add(-time.Minute), StaleUntil: now.Add(time.Hour)},
		{Kind: Value, Type: 1, WrittenAt: now, FreshUntil: now.Add(time.Second), Payload: []byte("being refreshed"),
			LeaseToken: bytes.Repeat([]byte{0xAB}, TokenSize), LeaseUntil: now.Add(5 * time.Second)},
		{Kind: Lease, Type: 1, WrittenAt: now, FreshUntil: now.Add(5 * time.Second), Payload: bytes.Repeat([]byte{1}, TokenSize)},
		{Kind: Value, Type: 1, WrittenAt: now, FreshUntil: now.Add(time.Second), Payload: []byte("newer writer"),
			Unknown: []byte{99, 2, 0xAA, 0xBB}},
	}
}

func equal(a, b Entry) bool {
	if a.Kind == Lease {
		a.LeaseToken, a.LeaseUntil = a.Payload, a.FreshUntil
	}
	return a.Kind == b.Kind && a.Type == b.Type && a.WrittenAt.Equal(b.WrittenAt) && a.FreshUntil.Equal(b.FreshUntil) &&
		a.StaleUntil.Equal(b.StaleUntil) && a.LoadDuration == b.LoadDuration && a.Rearmed == b.Rearmed &&
		a.OrigFreshUntil.Equal(b.OrigFreshUntil) && bytes.Equal(a.LeaseToken, b.LeaseToken) &&
		a.LeaseUntil.Equal(b.LeaseUntil) && bytes.Equal(a.Unknown, b.Unknown) && bytes.Equal(a.Payload, b.Payload)
}

func TestRoundTrip(t *testing.T) {
	for _, e := range samples() {
		got, err := Decode(Encode(&e))
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", e, err)
		}
		if !equal(e, got) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
		}
	}
}

// TestCutShortIsCorrupt: an entry cut at any length, by a store, a proxy or
// a reply lost mid-way, never decodes, whatever its payload codec would
// accept (the raw []byte and string codecs accept anything).
func TestCutShortIsCorrupt(t *testing.T) {
	for _, e := range samples() {
		b := Encode(&e)
		for n := range len(b) {
			if _, err := Decode(b[:n]); err != ErrCorrupt {
				t.Fatalf("%+v cut to %d of %d bytes: err = %v, want ErrCorrupt", e, n, len(b), err)
			}
		}
	}
}

// TestAnyFlippedByteIsCorrupt: the checksum covers header, extensions and
// payload.
func TestAnyFlippedByteIsCorrupt(t *testing.T) {
	for _, e := range samples() {
		b := Encode(&e)
		for i := range b {
			c := bytes.Clone(b)
			c[i] ^= 0x40
			if _, err := Decode(c); err != ErrCorrupt {
				t.Fatalf("%+v with byte %d flipped: err = %v, want ErrCorrupt", e, i, err)
			}
		}
	}
}

// TestLegacyEntriesAreAMiss: entries written before the check existed (the
// same header, no check extension) are a clean miss, never misread.
func TestLegacyEntriesAreAMiss(t *testing.T) {
	b := make([]byte, headerSize, headerSize+8)
	b[0], b[1], b[2], b[3] = magic, version, byte(Value), 0
	binary.BigEndian.PutUint64(b[8:], uint64(now.UnixNano()))
	binary.BigEndian.PutUint64(b[16:], uint64(now.Add(time.Hour).UnixNano()))
	b = append(b, `{"a":1}`...)
	if _, err := Decode(b); err != ErrCorrupt {
		t.Fatalf("legacy entry: err = %v, want ErrCorrupt", err)
	}
}

// TestOlderReadersSkipTheNewExtensions: a reader of the previous release
// walks the extension area by tag and length and finds the payload where we
// put it; that is what keeps a rolling upgrade readable both ways.
func TestOlderReadersSkipTheNewExtensions(t *testing.T) {
	for _, e := range samples() {
		if e.Kind == Lease {
			continue // older readers reject this kind: a miss for them
		}
		b := Encode(&e)
		n := int(b[3])
		ext := b[headerSize : headerSize+n]
		for len(ext) > 0 { // the previous release's walk
			if len(ext) < 2 || 2+int(ext[1]) > len(ext) {
				t.Fatalf("%+v: extension area not walkable by tag and length", e)
			}
			ext = ext[2+int(ext[1]):]
		}
		if !bytes.Equal(b[headerSize+n:], e.Payload) {
			t.Fatalf("%+v: payload not where an older reader looks", e)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good := samples()[0]
	for name, e := range map[string]Entry{
		"not-found with payload":   {Kind: NotFound, WrittenAt: now, FreshUntil: now.Add(time.Second), Payload: []byte("p")},
		"fresh before written":     {Kind: Value, WrittenAt: now, FreshUntil: now.Add(-1)},
		"lease with a short token": {Kind: Lease, WrittenAt: now, FreshUntil: now.Add(time.Second), Payload: []byte("short")},
		"kind 0":                   {Kind: 0, WrittenAt: now, FreshUntil: now.Add(time.Second)},
		"kind 9":                   {Kind: 9, WrittenAt: now, FreshUntil: now.Add(time.Second)},
	} {
		if _, err := Decode(Encode(&e)); err != ErrCorrupt {
			t.Errorf("%s: Decode err = %v, want ErrCorrupt", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"nil":       nil,
		"json":      []byte(`{"id":1}`),
		"too short": Encode(&good)[:headerSize],
	} {
		if _, err := Decode(b); err != ErrCorrupt {
			t.Errorf("%s: Decode err = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestLeased(t *testing.T) {
	s := samples()
	if s[0].Leased(now) {
		t.Error("a plain value reports a lease")
	}
	refreshing := s[4]
	if !refreshing.Leased(now) || refreshing.Leased(now.Add(5*time.Second)) {
		t.Error("an embedded lease must hold until LeaseUntil and not after")
	}
	if !s[5].Leased(now.Add(time.Hour)) {
		t.Error("a lease entry is leased while it exists")
	}
}

func TestTypeOfDistinguishesTypes(t *testing.T) {
	type product struct{ Name string }
	type user struct{ Name string }
	if TypeOf[product]() == TypeOf[user]() {
		t.Fatal("two named types share a fingerprint")
	}
	if a, b := TypeOf[product](), TypeOf[product](); a != b {
		t.Fatal("fingerprint is not stable")
	}
	if TypeOf[[]byte]() == TypeOf[string]() {
		t.Fatal("[]byte and string share a fingerprint")
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to an
// entry that decodes to the same thing, so nothing is lost or misread.
func FuzzDecode(f *testing.F) {
	for _, e := range samples() {
		f.Add(Encode(&e))
	}
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if e.Kind != Lease && e.FreshUntil.Before(e.WrittenAt) {
			t.Fatal("accepted an entry fresh until before it was written")
		}
		again, err := Decode(Encode(&e))
		if err != nil || !reflect.DeepEqual(normal(again), normal(e)) {
			t.Fatalf("re-encoding changed the entry:\n in %+v\nout %+v (%v)", e, again, err)
		}
	})
}

func normal(e Entry) Entry {
	e.WrittenAt, e.FreshUntil = e.WrittenAt.UTC(), e.FreshUntil.UTC()
	e.StaleUntil, e.OrigFreshUntil, e.LeaseUntil = e.StaleUntil.UTC(), e.OrigFreshUntil.UTC(), e.LeaseUntil.UTC()
	if len(e.Unknown) == 0 {
		e.Unknown = nil
	}
	if len(e.Payload) == 0 {
		e.Payload = nil
	}
	return e
}
