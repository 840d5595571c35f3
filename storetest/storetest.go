// Package storetest checks that a [readthrough.Store] keeps the Store
// contract, and wraps any store to inject faults into tests of code that
// uses it.
//
// A store's own test calls [Run]:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) readthrough.Store { return mystore.New(...) })
//	}
//
// A service's test wraps its fake store with [NewFaultyStore] to see how
// it behaves when the cache fails or slows down.
package storetest

import (
	"github.com/readthrough-go/readthrough/store"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
)

// ttl is the short TTL the expiry tests use: long enough for a remote
// store's round trip, short enough to keep the suite quick.
const ttl = 300 * time.Millisecond

// Run runs the conformance suite against stores made by newStore, one per
// subtest. Each store must be empty, or at least hold none of the keys the
// suite uses (they start with "storetest:" and a per-subtest random part).
// The expiry tests wait in real time, about a second in all, since a
// remote store's clock cannot be faked.
func Run(t *testing.T, newStore func(t *testing.T) readthrough.Store) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, readthrough.Store, func(string) string)
	}{
		{"GetMissing", testGetMissing},
		{"SetGet", testSetGet},
		{"Overwrite", testOverwrite},
		{"BinarySafe", testBinarySafe},
		{"EmptyValue", testEmptyValue},
		{"LargeValue", testLargeValue},
		{"CallerOwnsSlices", testCallerOwnsSlices},
		{"Expiry", testExpiry},
		{"SetIfAbsent", testSetIfAbsent},
		{"SetIfAbsentAfterExpiry", testSetIfAbsentAfterExpiry},
		{"SetIfAbsentConcurrent", testSetIfAbsentConcurrent},
		{"Delete", testDelete},
		{"CancelledContext", testCancelledContext},
		{"CompareAndDelete", testCompareAndDelete},
		{"Limits", testLimits},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			prefix := fmt.Sprintf("storetest:%s:%d:", tc.name, time.Now().UnixNano())
			tc.fn(t, s, func(k string) string { return prefix + k })
		})
	}
}

func ctx(t *testing.T) context.Context { return t.Context() }

func mustSet(t *testing.T, s readthrough.Store, key string, value []byte, d time.Duration) {
	t.Helper()
	if err := s.Set(ctx(t), key, value, d); err != nil {
		t.Fatalf("Set(%q): %v", key, err)
	}
}

func wantValue(t *testing.T, s readthrough.Store, key string, want []byte) {
	t.Helper()
	got, ok, err := s.Get(ctx(t), key)
	if err != nil || !ok {
		t.Fatalf("Get(%q) = ok %v, err %v; want the value", key, ok, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %q, want %q", key, trim(got), trim(want))
	}
}

func wantMiss(t *testing.T, s readthrough.Store, key string) {
	t.Helper()
	got, ok, err := s.Get(ctx(t), key)
	if err != nil || ok {
		t.Fatalf("Get(%q) = %q, ok %v, err %v; want a miss (ok false, nil error)", key, trim(got), ok, err)
	}
}

func trim(b []byte) string {
	if len(b) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", b[:40], len(b))
	}
	return string(b)
}

func testGetMissing(t *testing.T, s readthrough.Store, key func(string) string) {
	wantMiss(t, s, key("never-set"))
}

func testSetGet(t *testing.T, s readthrough.Store, key func(string) string) {
	mustSet(t, s, key("a"), []byte("alpha"), time.Minute)
	mustSet(t, s, key("b"), []byte("beta"), time.Minute)
	wantValue(t, s, key("a"), []byte("alpha"))
	wantValue(t, s, key("b"), []byte("beta"))
}

func testOverwrite(t *testing.T, s readthrough.Store, key func(string) string) {
	mustSet(t, s, key("k"), []byte("first"), time.Minute)
	mustSet(t, s, key("k"), []byte("second, longer"), time.Minute)
	wantValue(t, s, key("k"), []byte("second, longer"))
}

func testBinarySafe(t *testing.T, s readthrough.Store, key func(string) string) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	keys := []string{key("\x00nul"), key("sp ace\r\n"), key("ünïcødé·✓"), key("\xff\xfe"), key("a:b:c")}
	for i, k := range keys {
		v := append([]byte{byte(i)}, all...)
		mustSet(t, s, k, v, time.Minute)
	}
	for i, k := range keys {
		wantValue(t, s, k, append([]byte{byte(i)}, all...))
	}
}

func testEmptyValue(t *testing.T, s readthrough.Store, key func(string) string) {
	mustSet(t, s, key("empty"), []byte{}, time.Minute)
	got, ok, err := s.Get(ctx(t), key("empty"))
	if err != nil || !ok || len(got) != 0 {
		t.Fatalf("Get of an empty value = %q, ok %v, err %v; want an empty hit", got, ok, err)
	}
}

func testLargeValue(t *testing.T, s readthrough.Store, key func(string) string) {
	n := 1 << 20
	if l, ok := s.(store.Limiter); ok {
		if m := l.Limits().MaxEntrySize; m > 0 && m < n+64 {
			n = m - 64 // leave room for the key in stores that count it
		}
	}
	v := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
	mustSet(t, s, key("large"), v, time.Minute)
	wantValue(t, s, key("large"), v)
}

func testCallerOwnsSlices(t *testing.T, s readthrough.Store, key func(string) string) {
	v := []byte("original")
	mustSet(t, s, key("k"), v, time.Minute)
	copy(v, "MUTATED!") // the caller reuses its buffer after Set
	got, _, _ := s.Get(ctx(t), key("k"))
	copy(got, "CHANGED!") // and writes into what Get returned
	wantValue(t, s, key("k"), []byte("original"))
}

func testExpiry(t *testing.T, s readthrough.Store, key func(string) string) {
	mustSet(t, s, key("short"), []byte("v"), ttl)
	mustSet(t, s, key("long"), []byte("v"), time.Minute)
	wantValue(t, s, key("short"), []byte("v"))
	time.Sleep(ttl + 200*time.Millisecond)
	wantMiss(t, s, key("short"))
	wantValue(t, s, key("long"), []byte("v"))
}

func testSetIfAbsent(t *testing.T, s readthrough.Store, key func(string) string) {
	ok, err := s.SetIfAbsent(ctx(t), key("k"), []byte("first"), time.Minute)
	if err != nil || !ok {
		t.Fatalf("SetIfAbsent on an empty key = %v, %v; want true, nil", ok, err)
	}
	ok, err = s.SetIfAbsent(ctx(t), key("k"), []byte("second"), time.Minute)
	if err != nil || ok {
		t.Fatalf("SetIfAbsent on a held key = %v, %v; want false, nil", ok, err)
	}
	wantValue(t, s, key("k"), []byte("first"))
	if err := s.Delete(ctx(t), key("k")); err != nil {
		t.Fatal(err)
	}
	ok, err = s.SetIfAbsent(ctx(t), key("k"), []byte("third"), time.Minute)
	if err != nil || !ok {
		t.Fatalf("SetIfAbsent after Delete = %v, %v; want true, nil", ok, err)
	}
	wantValue(t, s, key("k"), []byte("third"))
}

func testSetIfAbsentAfterExpiry(t *testing.T, s readthrough.Store, key func(string) string) {
	if ok, err := s.SetIfAbsent(ctx(t), key("k"), []byte("first"), ttl); err != nil || !ok {
		t.Fatalf("SetIfAbsent = %v, %v; want true, nil", ok, err)
	}
	time.Sleep(ttl + 200*time.Millisecond)
	if ok, err := s.SetIfAbsent(ctx(t), key("k"), []byte("second"), time.Minute); err != nil || !ok {
		t.Fatalf("SetIfAbsent after expiry = %v, %v; want true, nil (an expired key is absent)", ok, err)
	}
	wantValue(t, s, key("k"), []byte("second"))
}

func testSetIfAbsentConcurrent(t *testing.T, s readthrough.Store, key func(string) string) {
	const n = 32
	var won atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			ok, err := s.SetIfAbsent(ctx(t), key("race"), fmt.Appendf(nil, "%d", i), time.Minute)
			if err != nil {
				errs <- err
			}
			if ok {
				won.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("SetIfAbsent: %v", err)
	}
	if got := won.Load(); got != 1 {
		t.Fatalf("%d of %d concurrent SetIfAbsent calls won; want exactly 1", got, n)
	}
}

func testDelete(t *testing.T, s readthrough.Store, key func(string) string) {
	mustSet(t, s, key("k"), []byte("v"), time.Minute)
	mustSet(t, s, key("other"), []byte("v"), time.Minute)
	for range 2 { // idempotent
		if err := s.Delete(ctx(t), key("k")); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	wantMiss(t, s, key("k"))
	wantValue(t, s, key("other"), []byte("v"))
	if err := s.Delete(ctx(t), key("never-set")); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
}

func testCancelledContext(t *testing.T, s readthrough.Store, key func(string) string) {
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s on a cancelled context: err = %v, want one matching context.Canceled", op, err)
		}
	}
	_, _, err := s.Get(c, key("k"))
	check("Get", err)
	check("Set", s.Set(c, key("k"), []byte("v"), time.Minute))
	_, err = s.SetIfAbsent(c, key("k"), []byte("v"), time.Minute)
	check("SetIfAbsent", err)
	check("Delete", s.Delete(c, key("k")))
	if cad, ok := s.(store.CompareAndDeleter); ok {
		_, err = cad.CompareAndDelete(c, key("k"), []byte("v"))
		if !errors.Is(err, errors.ErrUnsupported) {
			check("CompareAndDelete", err)
		}
	}
}

func testCompareAndDelete(t *testing.T, s readthrough.Store, key func(string) string) {
	cad, ok := s.(store.CompareAndDeleter)
	if !ok {
		t.Skip("store does not implement store.CompareAndDeleter; the cache falls back to Delete")
	}
	deleted, err := cad.CompareAndDelete(ctx(t), key("lock"), []byte("token"))
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skipf("CompareAndDelete is unsupported by the wrapped store: %v", err)
	}
	if err != nil || deleted {
		t.Fatalf("CompareAndDelete of a missing key = %v, %v; want false, nil", deleted, err)
	}
	mustSet(t, s, key("lock"), []byte("token-a"), time.Minute)
	deleted, err = cad.CompareAndDelete(ctx(t), key("lock"), []byte("token-b"))
	if err != nil || deleted {
		t.Fatalf("CompareAndDelete with another value = %v, %v; want false, nil", deleted, err)
	}
	wantValue(t, s, key("lock"), []byte("token-a"))
	deleted, err = cad.CompareAndDelete(ctx(t), key("lock"), []byte("token-a"))
	if err != nil || !deleted {
		t.Fatalf("CompareAndDelete with the held value = %v, %v; want true, nil", deleted, err)
	}
	// A store with no native conditional delete may let the key live out
	// its shortest TTL (Momento: 1 ms); it must be gone soon after.
	for deadline := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, ok, err := s.Get(ctx(t), key("lock"))
		if err != nil {
			t.Fatalf("Get after CompareAndDelete: %v", err)
		}
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the key is still there 1s after CompareAndDelete reported deleting it")
		}
	}
}

func testLimits(t *testing.T, s readthrough.Store, key func(string) string) {
	l, ok := s.(store.Limiter)
	if !ok {
		t.Skip("store does not implement store.Limiter")
	}
	lim := l.Limits()
	if lim.MaxTTL < 0 || lim.TTLGranularity < 0 || lim.MaxEntrySize < 0 {
		t.Fatalf("Limits() = %+v: negative limits", lim)
	}
	if lim.MaxTTL > 0 {
		// The longest TTL the store declares must be accepted.
		mustSet(t, s, key("max-ttl"), []byte("v"), lim.MaxTTL)
		wantValue(t, s, key("max-ttl"), []byte("v"))
	}
	// Probing a limit means sending a value past it; above 8 MB that costs
	// more than it tells.
	if lim.MaxEntrySize > 0 && lim.MaxEntrySize <= 8<<20 {
		big := []byte(strings.Repeat("x", lim.MaxEntrySize+1))
		if err := s.Set(ctx(t), key("too-big"), big, time.Minute); err == nil {
			if _, ok, _ := s.Get(ctx(t), key("too-big")); ok {
				t.Fatalf("a value of MaxEntrySize+1 (%d) bytes was stored; the declared limit is wrong", len(big))
			}
		}
	}
}
