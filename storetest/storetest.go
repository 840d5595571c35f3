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
// Run checks the four methods of the Store interface, and each optional
// capability of package store that the store has (a capability whose
// method returns an error matching [errors.ErrUnsupported] counts as
// absent). A store over a remote server also passes [Options.NewPeer] to
// [RunWithOptions], so notifications are checked across two clients.
//
// A service's test wraps its fake store with [NewFaultyStore] to see how
// it behaves when the cache fails, slows down, loses replies or returns
// damaged bytes; [Plain] hides a store's capabilities to test the
// generic path.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/store"
)

// ttl is the short TTL the expiry tests use: long enough for a remote
// store's round trip, short enough to keep the suite quick.
const ttl = 300 * time.Millisecond

// Options adapt [RunWithOptions] to a store that needs more than a
// constructor. The zero value is what [Run] uses.
type Options struct {
	// NewPeer returns a second store value over the same backend as s
	// (another client of the same server, as another process would have).
	// When set, the notification tests also write through the peer and
	// expect listeners registered on s to hear of it. An in-process store
	// may return s itself.
	NewPeer func(t *testing.T, s readthrough.Store) readthrough.Store
}

// Run runs the conformance suite against stores made by newStore, one per
// subtest. Each store must be empty, or at least hold none of the keys the
// suite uses (they start with "storetest:" and a per-subtest unique part).
// The expiry tests wait in real time, a few seconds in all, since a
// remote store's clock cannot be faked.
func Run(t *testing.T, newStore func(t *testing.T) readthrough.Store) {
	t.Helper()
	RunWithOptions(t, newStore, Options{})
}

// RunWithOptions is [Run] with options.
func RunWithOptions(t *testing.T, newStore func(t *testing.T) readthrough.Store, opts Options) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"GetMissing", basic(testGetMissing)},
		{"SetGet", basic(testSetGet)},
		{"Overwrite", basic(testOverwrite)},
		{"BinarySafe", basic(testBinarySafe)},
		{"EmptyValue", basic(testEmptyValue)},
		{"LargeValue", basic(testLargeValue)},
		{"CallerOwnsSlices", basic(testCallerOwnsSlices)},
		{"Expiry", basic(testExpiry)},
		{"SetIfAbsent", basic(testSetIfAbsent)},
		{"SetIfAbsentIdempotent", basic(testSetIfAbsentIdempotent)},
		{"SetIfAbsentAfterExpiry", basic(testSetIfAbsentAfterExpiry)},
		{"SetIfAbsentConcurrent", basic(testSetIfAbsentConcurrent)},
		{"Delete", basic(testDelete)},
		{"CancelledContext", basic(testCancelledContext)},
		{"CompareAndSwap", basic(testCompareAndSwap)},
		{"CompareAndSwapTTL", basic(testCompareAndSwapTTL)},
		{"CompareAndSwapConcurrent", basic(testCompareAndSwapConcurrent)},
		{"GetOrSet", basic(testGetOrSet)},
		{"GetOrSetExpiry", basic(testGetOrSetExpiry)},
		{"GetOrSetConcurrent", basic(testGetOrSetConcurrent)},
		{"CompareAndDelete", basic(testCompareAndDelete)},
		{"Batch", basic(testBatch)},
		{"BatchEmpty", basic(testBatchEmpty)},
		{"BatchCancelled", basic(testBatchCancelled)},
		{"NotifyConnected", testNotifyConnected},
		{"NotifyChanges", testNotifyChanges},
		{"NotifyPeerChanges", testNotifyPeerChanges},
		{"NotifyPrefix", testNotifyPrefix},
		{"NotifyOverlapping", testNotifyOverlapping},
		{"NotifyExpiry", testNotifyExpiry},
		{"NotifyStop", testNotifyStop},
		{"Limits", basic(testLimits)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			prefix := fmt.Sprintf("storetest:%s:%d:", tc.name, time.Now().UnixNano())
			e := &env{s: s, key: func(k string) string { return prefix + k }}
			if opts.NewPeer != nil {
				e.peer = func() readthrough.Store { return opts.NewPeer(t, s) }
			}
			tc.fn(t, e)
		})
	}
}

// env is what a subtest works on.
type env struct {
	s    readthrough.Store
	key  func(string) string      // the subtest's own key for a name
	peer func() readthrough.Store // nil without Options.NewPeer
}

func basic(fn func(*testing.T, readthrough.Store, func(string) string)) func(*testing.T, *env) {
	return func(t *testing.T, e *env) { fn(t, e.s, e.key) }
}

func ctx(t *testing.T) context.Context { return t.Context() }

// isUnsupported reports whether err says a capability is absent.
func isUnsupported(err error) bool { return errors.Is(err, errors.ErrUnsupported) }

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
			n = m - 64 // leave room for the key, which the limit counts
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

// testSetIfAbsentIdempotent: a SetIfAbsent retried after its reply was
// lost finds its own value, and must report true, or the cache would think
// another process holds the lock it took.
func testSetIfAbsentIdempotent(t *testing.T, s readthrough.Store, key func(string) string) {
	for i, want := range []bool{true, true} {
		ok, err := s.SetIfAbsent(ctx(t), key("k"), []byte("token"), time.Minute)
		if err != nil || ok != want {
			t.Fatalf("SetIfAbsent #%d of the same value = %v, %v; want %v, nil (a retry must stay idempotent)", i+1, ok, err, want)
		}
	}
	ok, err := s.SetIfAbsent(ctx(t), key("k"), []byte("other"), time.Minute)
	if err != nil || ok {
		t.Fatalf("SetIfAbsent of another value on a held key = %v, %v; want false, nil", ok, err)
	}
	wantValue(t, s, key("k"), []byte("token"))
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
	// A capability's method may say it is absent instead.
	checkCap := func(op string, err error) {
		t.Helper()
		if !isUnsupported(err) {
			check(op, err)
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
		checkCap("CompareAndDelete", err)
	}
	if cas, ok := s.(store.CompareAndSwapper); ok {
		_, err = cas.CompareAndSwap(c, key("k"), []byte("v"), []byte("w"), time.Minute)
		checkCap("CompareAndSwap", err)
	}
	if gs, ok := s.(store.GetOrSetter); ok {
		_, _, err = gs.GetOrSet(c, key("k"), []byte("v"), time.Minute)
		checkCap("GetOrSet", err)
	}
}
