package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/store"
)

// The tests of the optional capabilities of package store. Each skips when
// the store lacks the capability, by type or by an error matching
// errors.ErrUnsupported on its first call.

func casOf(t *testing.T, s readthrough.Store) store.CompareAndSwapper {
	t.Helper()
	cas, ok := s.(store.CompareAndSwapper)
	if !ok {
		t.Skip("store does not implement store.CompareAndSwapper")
	}
	return cas
}

func getOrSetterOf(t *testing.T, s readthrough.Store) store.GetOrSetter {
	t.Helper()
	gs, ok := s.(store.GetOrSetter)
	if !ok {
		t.Skip("store does not implement store.GetOrSetter")
	}
	return gs
}

func skipUnsupported(t *testing.T, what string, err error) {
	t.Helper()
	if isUnsupported(err) {
		t.Skipf("%s is unsupported by this store: %v", what, err)
	}
}

func mustCAS(t *testing.T, cas store.CompareAndSwapper, key string, old, value []byte, d time.Duration, want bool) {
	t.Helper()
	swapped, err := cas.CompareAndSwap(ctx(t), key, old, value, d)
	if err != nil || swapped != want {
		t.Fatalf("CompareAndSwap(%q, old %q, new %q) = %v, %v; want %v, nil", key, trim(old), trim(value), swapped, err, want)
	}
}

func testCompareAndSwap(t *testing.T, s readthrough.Store, key func(string) string) {
	cas := casOf(t, s)
	swapped, err := cas.CompareAndSwap(ctx(t), key("k"), []byte("old"), []byte("new"), time.Minute)
	skipUnsupported(t, "CompareAndSwap", err)
	if err != nil || swapped {
		t.Fatalf("CompareAndSwap on an absent key = %v, %v; want false, nil", swapped, err)
	}
	wantMiss(t, s, key("k"))

	mustSet(t, s, key("k"), []byte("v1"), time.Minute)
	mustCAS(t, cas, key("k"), []byte("other"), []byte("v2"), time.Minute, false)
	wantValue(t, s, key("k"), []byte("v1"))
	mustCAS(t, cas, key("k"), []byte("v1"), []byte("v2"), time.Minute, true)
	wantValue(t, s, key("k"), []byte("v2"))
	// A retry whose old is what is now there is a CAS like any other.
	mustCAS(t, cas, key("k"), []byte("v2"), []byte("v3"), time.Minute, true)
	wantValue(t, s, key("k"), []byte("v3"))
	// A store may report true when key already holds value; it need not.
	swapped, err = cas.CompareAndSwap(ctx(t), key("k"), []byte("v2"), []byte("v3"), time.Minute)
	if err != nil {
		t.Fatalf("CompareAndSwap repeated: %v", err)
	}
	t.Logf("a repeated CompareAndSwap reports %v (either is allowed)", swapped)
	wantValue(t, s, key("k"), []byte("v3"))

	// Old must match exactly: not a prefix, not empty for a held value.
	mustCAS(t, cas, key("k"), []byte("v"), []byte("v4"), time.Minute, false)
	mustCAS(t, cas, key("k"), nil, []byte("v4"), time.Minute, false)
	wantValue(t, s, key("k"), []byte("v3"))
}

// testCompareAndSwapTTL: a swap applies its own TTL (it is how the cache
// keeps a lease alive), and an expired key never matches.
func testCompareAndSwapTTL(t *testing.T, s readthrough.Store, key func(string) string) {
	cas := casOf(t, s)
	mustSet(t, s, key("shortened"), []byte("a1"), time.Minute)
	swapped, err := cas.CompareAndSwap(ctx(t), key("shortened"), []byte("a1"), []byte("a2"), ttl)
	skipUnsupported(t, "CompareAndSwap", err)
	if err != nil || !swapped {
		t.Fatalf("CompareAndSwap = %v, %v; want true, nil", swapped, err)
	}
	mustSet(t, s, key("lengthened"), []byte("b1"), ttl)
	mustCAS(t, cas, key("lengthened"), []byte("b1"), []byte("b2"), time.Minute, true)
	mustSet(t, s, key("lease"), []byte("token"), ttl)
	mustCAS(t, cas, key("lease"), []byte("token"), []byte("token"), time.Minute, true)
	mustSet(t, s, key("expiring"), []byte("c1"), ttl)

	time.Sleep(ttl + 200*time.Millisecond)
	wantMiss(t, s, key("shortened"))
	wantValue(t, s, key("lengthened"), []byte("b2"))
	wantValue(t, s, key("lease"), []byte("token")) // swapped for itself, with the new TTL
	mustCAS(t, cas, key("expiring"), []byte("c1"), []byte("c2"), time.Minute, false)
	wantMiss(t, s, key("expiring"))
}

func testCompareAndSwapConcurrent(t *testing.T, s readthrough.Store, key func(string) string) {
	cas := casOf(t, s)
	mustSet(t, s, key("race"), []byte("v0"), time.Minute)
	const n = 32
	var mu sync.Mutex
	var winners []string
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			v := fmt.Sprintf("v0->%d", i)
			ok, err := cas.CompareAndSwap(ctx(t), key("race"), []byte("v0"), []byte(v), time.Minute)
			if err != nil {
				errs <- err
			}
			if ok {
				mu.Lock()
				winners = append(winners, v)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		skipUnsupported(t, "CompareAndSwap", err)
		t.Fatalf("CompareAndSwap: %v", err)
	}
	if len(winners) != 1 {
		t.Fatalf("%d of %d concurrent CompareAndSwap calls from one old value swapped (%q); want exactly 1", len(winners), n, winners)
	}
	wantValue(t, s, key("race"), []byte(winners[0]))
	mustCAS(t, cas, key("race"), []byte(winners[0]), []byte("after"), time.Minute, true)
	wantValue(t, s, key("race"), []byte("after"))
}

func testGetOrSet(t *testing.T, s readthrough.Store, key func(string) string) {
	gs := getOrSetterOf(t, s)
	cur, stored, err := gs.GetOrSet(ctx(t), key("k"), []byte("first"), time.Minute)
	skipUnsupported(t, "GetOrSet", err)
	if err != nil || !stored {
		t.Fatalf("GetOrSet on an absent key = %q, %v, %v; want stored, nil", trim(cur), stored, err)
	}
	wantValue(t, s, key("k"), []byte("first"))

	cur, stored, err = gs.GetOrSet(ctx(t), key("k"), []byte("second"), time.Minute)
	if err != nil || stored || !bytes.Equal(cur, []byte("first")) {
		t.Fatalf("GetOrSet on a held key = %q, %v, %v; want %q, false, nil", trim(cur), stored, err, "first")
	}
	copy(cur, "FIRST") // the caller owns what it got
	wantValue(t, s, key("k"), []byte("first"))

	// A retry whose first reply was lost finds its own value.
	cur, stored, err = gs.GetOrSet(ctx(t), key("k"), []byte("first"), time.Minute)
	if err != nil || !stored {
		t.Fatalf("GetOrSet of the value key holds = %q, %v, %v; want stored, nil (a retry must stay idempotent)", trim(cur), stored, err)
	}

	mustSet(t, s, key("empty"), []byte{}, time.Minute)
	cur, stored, err = gs.GetOrSet(ctx(t), key("empty"), []byte("x"), time.Minute)
	if err != nil || stored || len(cur) != 0 {
		t.Fatalf("GetOrSet on a key holding an empty value = %q, %v, %v; want empty, false, nil", trim(cur), stored, err)
	}
}

func testGetOrSetExpiry(t *testing.T, s readthrough.Store, key func(string) string) {
	gs := getOrSetterOf(t, s)
	_, stored, err := gs.GetOrSet(ctx(t), key("k"), []byte("first"), ttl)
	skipUnsupported(t, "GetOrSet", err)
	if err != nil || !stored {
		t.Fatalf("GetOrSet = %v, %v; want stored, nil", stored, err)
	}
	time.Sleep(ttl + 200*time.Millisecond)
	wantMiss(t, s, key("k"))
	cur, stored, err := gs.GetOrSet(ctx(t), key("k"), []byte("second"), time.Minute)
	if err != nil || !stored {
		t.Fatalf("GetOrSet after expiry = %q, %v, %v; want stored, nil (an expired key is absent)", trim(cur), stored, err)
	}
	wantValue(t, s, key("k"), []byte("second"))
}

func testGetOrSetConcurrent(t *testing.T, s readthrough.Store, key func(string) string) {
	gs := getOrSetterOf(t, s)
	const n = 32
	type result struct {
		mine, cur []byte
		stored    bool
		err       error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := &results[i]
			r.mine = fmt.Appendf(nil, "value %d", i)
			r.cur, r.stored, r.err = gs.GetOrSet(ctx(t), key("race"), r.mine, time.Minute)
		})
	}
	wg.Wait()
	var winner []byte
	for _, r := range results {
		skipUnsupported(t, "GetOrSet", r.err)
		if r.err != nil {
			t.Fatalf("GetOrSet: %v", r.err)
		}
		if r.stored {
			if winner != nil {
				t.Fatalf("two concurrent GetOrSet calls stored: %q and %q", winner, r.mine)
			}
			winner = r.mine
		}
	}
	if winner == nil {
		t.Fatalf("none of %d concurrent GetOrSet calls stored", n)
	}
	wantValue(t, s, key("race"), winner)
	for _, r := range results {
		if !r.stored && !bytes.Equal(r.cur, winner) {
			t.Errorf("a GetOrSet that did not store saw %q; want the stored %q", r.cur, winner)
		}
	}
}

func testCompareAndDelete(t *testing.T, s readthrough.Store, key func(string) string) {
	cad, ok := s.(store.CompareAndDeleter)
	if !ok {
		t.Skip("store does not implement store.CompareAndDeleter; the cache falls back to Delete")
	}
	deleted, err := cad.CompareAndDelete(ctx(t), key("lock"), []byte("token"))
	skipUnsupported(t, "CompareAndDelete", err)
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

func batcherOf(t *testing.T, s readthrough.Store) store.Batcher {
	t.Helper()
	b, ok := s.(store.Batcher)
	if !ok {
		t.Skip("store does not implement store.Batcher")
	}
	// An empty batch is fine, and says whether batches are supported.
	err := b.Batch(ctx(t), nil)
	skipUnsupported(t, "Batch", err)
	if err != nil {
		t.Fatalf("Batch of no operations: %v", err)
	}
	return b
}

// testBatch runs one batch of every kind, and checks each operation's
// result is what the single-key method gives.
func testBatch(t *testing.T, s readthrough.Store, key func(string) string) {
	b := batcherOf(t, s)
	for _, k := range []string{"held", "sia-held", "sia-same", "del", "cas-held", "cas-other", "gos-held"} {
		mustSet(t, s, key(k), []byte(k+" value"), time.Minute)
	}
	// Whether the single-key capabilities are there, by a harmless call.
	hasCAS, hasGOS := false, false
	if cas, ok := s.(store.CompareAndSwapper); ok {
		_, err := cas.CompareAndSwap(ctx(t), key("probe"), []byte("x"), []byte("y"), time.Minute)
		hasCAS = !isUnsupported(err)
	}
	if gs, ok := s.(store.GetOrSetter); ok {
		_, _, err := gs.GetOrSet(ctx(t), key("probe"), []byte("x"), time.Minute)
		hasGOS = !isUnsupported(err)
	}

	type want struct {
		ok     bool
		result string // for Get and GetOrSet
		unsup  bool   // Err must match errors.ErrUnsupported
	}
	var ops []store.Op
	var wants []want
	add := func(op store.Op, w want) {
		op.Key = key(op.Key)
		ops, wants = append(ops, op), append(wants, w)
	}
	add(store.Op{Kind: store.OpGet, Key: "held"}, want{ok: true, result: "held value"})
	add(store.Op{Kind: store.OpGet, Key: "missing"}, want{})
	add(store.Op{Kind: store.OpSet, Key: "set", Value: []byte("set value"), TTL: time.Minute}, want{})
	add(store.Op{Kind: store.OpSetIfAbsent, Key: "sia-held", Value: []byte("x"), TTL: time.Minute}, want{ok: false})
	add(store.Op{Kind: store.OpSetIfAbsent, Key: "sia-new", Value: []byte("sia-new value"), TTL: time.Minute}, want{ok: true})
	add(store.Op{Kind: store.OpSetIfAbsent, Key: "sia-same", Value: []byte("sia-same value"), TTL: time.Minute}, want{ok: true})
	add(store.Op{Kind: store.OpDelete, Key: "del"}, want{})
	add(store.Op{Kind: store.OpDelete, Key: "del-missing"}, want{})
	add(store.Op{Kind: store.OpCompareAndSwap, Key: "cas-held", Old: []byte("cas-held value"), Value: []byte("swapped"), TTL: time.Minute},
		want{ok: true, unsup: !hasCAS})
	add(store.Op{Kind: store.OpCompareAndSwap, Key: "cas-other", Old: []byte("other"), Value: []byte("swapped"), TTL: time.Minute},
		want{ok: false, unsup: !hasCAS})
	add(store.Op{Kind: store.OpCompareAndSwap, Key: "cas-missing", Old: []byte("x"), Value: []byte("swapped"), TTL: time.Minute},
		want{ok: false, unsup: !hasCAS})
	add(store.Op{Kind: store.OpGetOrSet, Key: "gos-held", Value: []byte("x"), TTL: time.Minute},
		want{ok: false, result: "gos-held value", unsup: !hasGOS})
	add(store.Op{Kind: store.OpGetOrSet, Key: "gos-new", Value: []byte("gos-new value"), TTL: time.Minute},
		want{ok: true, unsup: !hasGOS})
	add(store.Op{Kind: store.OpKind(250), Key: "unknown"}, want{unsup: true})

	if err := b.Batch(ctx(t), ops); err != nil {
		t.Fatalf("Batch: %v", err)
	}
	for i, op := range ops {
		w := wants[i]
		name := fmt.Sprintf("op %d, %v %q", i, op.Kind, strings.TrimPrefix(op.Key, key("")))
		if w.unsup {
			if !isUnsupported(op.Err) {
				t.Errorf("%s: Err = %v; want one matching errors.ErrUnsupported (the store lacks the capability)", name, op.Err)
			}
			continue
		}
		if op.Err != nil {
			t.Errorf("%s: Err = %v", name, op.Err)
			continue
		}
		if op.OK != w.ok || string(op.Result) != w.result {
			t.Errorf("%s: OK %v, Result %q; want %v, %q", name, op.OK, trim(op.Result), w.ok, w.result)
		}
	}

	// The effects, read back one key at a time.
	wantValue(t, s, key("set"), []byte("set value"))
	wantValue(t, s, key("sia-held"), []byte("sia-held value"))
	wantValue(t, s, key("sia-new"), []byte("sia-new value"))
	wantValue(t, s, key("sia-same"), []byte("sia-same value"))
	wantMiss(t, s, key("del"))
	if hasCAS {
		wantValue(t, s, key("cas-held"), []byte("swapped"))
		wantValue(t, s, key("cas-other"), []byte("cas-other value"))
		wantMiss(t, s, key("cas-missing"))
	}
	if hasGOS {
		wantValue(t, s, key("gos-held"), []byte("gos-held value"))
		wantValue(t, s, key("gos-new"), []byte("gos-new value"))
	}
	if t.Failed() {
		return
	}

	// The caller owns the bytes a batch read returns.
	read := []store.Op{{Kind: store.OpGet, Key: key("held")}}
	if err := b.Batch(ctx(t), read); err != nil || read[0].Err != nil {
		t.Fatalf("Batch of one Get: %v, %v", err, read[0].Err)
	}
	copy(read[0].Result, "CHANGED!")
	wantValue(t, s, key("held"), []byte("held value"))
}

func testBatchEmpty(t *testing.T, s readthrough.Store, key func(string) string) {
	b := batcherOf(t, s) // which runs a nil batch
	if err := b.Batch(ctx(t), []store.Op{}); err != nil {
		t.Fatalf("Batch of an empty slice: %v", err)
	}
}

func testBatchCancelled(t *testing.T, s readthrough.Store, key func(string) string) {
	b := batcherOf(t, s)
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	ops := []store.Op{
		{Kind: store.OpSet, Key: key("k"), Value: []byte("v"), TTL: time.Minute},
		{Kind: store.OpGet, Key: key("k")},
	}
	if err := b.Batch(c, ops); !errors.Is(err, context.Canceled) {
		t.Fatalf("Batch on a cancelled context: err = %v, want one matching context.Canceled", err)
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
	maxSize := lim.MaxEntrySize
	if maxSize <= 0 || maxSize > 8<<20 {
		return
	}
	// MaxEntrySize counts key and value: an entry of exactly that size fits,
	// one byte more does not, whichever write sends it.
	entry := func(k string, size int) (string, []byte) {
		k = key(k)
		if size < len(k) {
			t.Skipf("MaxEntrySize %d is shorter than the suite's keys", maxSize)
		}
		return k, []byte(strings.Repeat("x", size-len(k)))
	}
	k, v := entry("fits", maxSize)
	mustSet(t, s, k, v, time.Minute)
	wantValue(t, s, k, v)

	tooLarge := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrTooLarge) {
			t.Errorf("%s of an entry of MaxEntrySize+1 (%d) bytes, key and value: err = %v; want one matching store.ErrTooLarge", op, maxSize+1, err)
		}
	}
	k, v = entry("too-big", maxSize+1)
	tooLarge("Set", s.Set(ctx(t), k, v, time.Minute))
	_, err := s.SetIfAbsent(ctx(t), k, v, time.Minute)
	tooLarge("SetIfAbsent", err)
	if cas, ok := s.(store.CompareAndSwapper); ok {
		mustSet(t, s, k, []byte("small"), time.Minute)
		_, err := cas.CompareAndSwap(ctx(t), k, []byte("small"), v, time.Minute)
		if !isUnsupported(err) {
			tooLarge("CompareAndSwap", err)
		}
		wantValue(t, s, k, []byte("small"))
		if err := s.Delete(ctx(t), k); err != nil {
			t.Fatal(err)
		}
	}
	if gs, ok := s.(store.GetOrSetter); ok {
		_, _, err := gs.GetOrSet(ctx(t), k, v, time.Minute)
		if !isUnsupported(err) {
			tooLarge("GetOrSet", err)
		}
	}
	wantMiss(t, s, k)
}
