package entry

import (
	"bytes"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	now := time.Unix(1_700_000_000, 123456789)
	for _, e := range []Entry{
		{Kind: Value, Type: 7, WrittenAt: now, FreshUntil: now.Add(time.Minute), Ext: []byte{}, Payload: []byte(`{"a":1}`)},
		{Kind: NotFound, Type: 7, WrittenAt: now, FreshUntil: now.Add(time.Second), Ext: []byte{}, Payload: []byte{}},
		{Kind: Value, Type: 1, WrittenAt: now, FreshUntil: now, Ext: []byte{1, 2, 3}, Payload: []byte("x")},
	} {
		b := Encode(e)
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", e, err)
		}
		if got.Kind != e.Kind || got.Type != e.Type || !got.WrittenAt.Equal(e.WrittenAt) ||
			!got.FreshUntil.Equal(e.FreshUntil) || !bytes.Equal(got.Ext, e.Ext) || !bytes.Equal(got.Payload, e.Payload) {
			t.Fatalf("round trip: got %+v, want %+v", got, e)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	good := Encode(Entry{Kind: Value, Type: 1, WrittenAt: now, FreshUntil: now.Add(time.Minute), Payload: []byte("p")})
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"nil":                  nil,
		"short":                good[:headerSize-1],
		"bad magic":            mut(func(b []byte) []byte { b[0] = '{'; return b }),
		"newer version":        mut(func(b []byte) []byte { b[1] = 2; return b }),
		"kind 0":               mut(func(b []byte) []byte { b[2] = 0; return b }),
		"kind 3":               mut(func(b []byte) []byte { b[2] = 3; return b }),
		"ext past end":         mut(func(b []byte) []byte { b[3] = 200; return b }),
		"not-found w/ payload": mut(func(b []byte) []byte { b[2] = byte(NotFound); return b }),
		"fresh before written": Encode(Entry{Kind: Value, WrittenAt: now, FreshUntil: now.Add(-1)}),
	} {
		if _, err := Decode(b); err != ErrCorrupt {
			t.Errorf("%s: Decode err = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestExtensionsAreSkipped(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	// A later writer adds extension fields; this reader must still find the payload.
	b := Encode(Entry{Kind: Value, WrittenAt: now, FreshUntil: now.Add(time.Minute), Ext: []byte{9, 2, 0xAA, 0xBB}, Payload: []byte("payload")})
	e, err := Decode(b)
	if err != nil || string(e.Payload) != "payload" {
		t.Fatalf("Decode = %q, %v; want payload", e.Payload, err)
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

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to
// exactly the same bytes, so nothing is lost or misread.
func FuzzDecode(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	f.Add(Encode(Entry{Kind: Value, Type: 1, WrittenAt: now, FreshUntil: now.Add(time.Minute), Payload: []byte(`{"id":1}`)}))
	f.Add(Encode(Entry{Kind: NotFound, WrittenAt: now, FreshUntil: now.Add(time.Second)}))
	f.Add(Encode(Entry{Kind: Value, WrittenAt: now, FreshUntil: now, Ext: []byte{1, 1, 1}}))
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if e.Kind != Value && e.Kind != NotFound {
			t.Fatalf("accepted kind %d", e.Kind)
		}
		if e.FreshUntil.Before(e.WrittenAt) {
			t.Fatal("accepted an entry fresh until before it was written")
		}
		if again := Encode(e); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding changed the bytes:\n in %x\nout %x", b, again)
		}
	})
}

func TestExtensionFields(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var ext []byte
	ext = AppendByte(ext, 99, 7) // an unknown tag first: skipped
	ext = AppendInt64(ext, ExtLoadDuration, int64(250*time.Millisecond))
	ext = AppendInt64(ext, ExtStaleUntil, now.Add(time.Hour).UnixNano())
	ext = AppendByte(ext, ExtFlags, FlagRearmed)
	e, err := Decode(Encode(Entry{Kind: Value, WrittenAt: now, FreshUntil: now.Add(time.Minute), Ext: ext, Payload: []byte("p")}))
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := e.Int64(ExtLoadDuration); !ok || time.Duration(d) != 250*time.Millisecond {
		t.Errorf("load duration = %v, %v", time.Duration(d), ok)
	}
	if su, ok := e.Int64(ExtStaleUntil); !ok || su != now.Add(time.Hour).UnixNano() {
		t.Errorf("stale until = %v, %v", su, ok)
	}
	if e.Flags() != FlagRearmed {
		t.Errorf("flags = %d", e.Flags())
	}
	if _, ok := e.Int64(42); ok {
		t.Error("found an absent tag")
	}
	// A truncated extension area yields nothing rather than garbage.
	if Find([]byte{ExtLoadDuration, 8, 1, 2}, ExtLoadDuration) != nil {
		t.Error("read past a truncated extension")
	}
}
