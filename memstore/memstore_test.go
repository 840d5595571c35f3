package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/store"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// samePeer: every cache of a process shares one memstore, so another
// writer is the same store value.
var samePeer = storetest.Options{NewPeer: func(_ *testing.T, s readthrough.Store) readthrough.Store { return s }}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.RunWithOptions(t, func(*testing.T) readthrough.Store { return memstore.New() }, samePeer)
}

func TestConformanceBounded(t *testing.T) {
	t.Parallel()
	storetest.RunWithOptions(t, func(*testing.T) readthrough.Store {
		return memstore.New(memstore.WithMaxEntries(1000), memstore.WithMaxBytes(4<<20))
	}, samePeer)
}

func TestCapabilities(t *testing.T) {
	t.Parallel()
	var s any = memstore.New()
	_, ok := s.(store.GetOrSetter)
	assert.False(t, ok, "in process, Get is cheaper than GetOrSet on hits")
	for name, ok := range map[string]bool{
		"CompareAndSwapper": is[store.CompareAndSwapper](s),
		"CompareAndDeleter": is[store.CompareAndDeleter](s),
		"Notifier":          is[store.Notifier](s),
		"Batcher":           is[store.Batcher](s),
		"Limiter":           is[store.Limiter](s),
		"NonBlocking":       is[store.NonBlocking](s),
	} {
		assert.True(t, ok, name)
	}
}

func is[T any](v any) bool { _, ok := v.(T); return ok }

func TestExpiryFollowsTheBubbleClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		ctx := context.Background()
		require.NoError(t, s.Set(ctx, "k", []byte("v"), 10*time.Second))

		time.Sleep(10*time.Second - time.Nanosecond)
		_, ok, err := s.Get(ctx, "k")
		require.NoError(t, err)
		assert.True(t, ok, "entry must live until its TTL")

		time.Sleep(time.Nanosecond)
		_, ok, err = s.Get(ctx, "k")
		require.NoError(t, err)
		assert.False(t, ok, "entry must be gone at its TTL")
		assert.Zero(t, s.Len())
	})
}

func TestRejectsNonPositiveTTL(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	for _, ttl := range []time.Duration{0, -time.Second} {
		assert.Error(t, s.Set(t.Context(), "k", []byte("v"), ttl), "Set with ttl %v", ttl)
		_, err := s.SetIfAbsent(t.Context(), "k", []byte("v"), ttl)
		assert.Error(t, err, "SetIfAbsent with ttl %v", ttl)
		_, err = s.CompareAndSwap(t.Context(), "k", nil, []byte("v"), ttl)
		assert.Error(t, err, "CompareAndSwap with ttl %v", ttl)
	}
	assert.Zero(t, s.Len(), "a rejected write stores nothing")
}

func TestMaxEntriesEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	s := memstore.New(memstore.WithMaxEntries(3))
	ctx := t.Context()
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, s.Set(ctx, k, []byte(k), time.Minute))
	}
	_, ok, _ := s.Get(ctx, "a") // a is now the most recently used; b the least
	require.True(t, ok)
	require.NoError(t, s.Set(ctx, "d", []byte("d"), time.Minute))
	assert.Equal(t, []string{"a", "c", "d"}, s.Keys())
	require.NoError(t, s.Set(ctx, "c", []byte("c2"), time.Minute)) // an overwrite is a use
	require.NoError(t, s.Set(ctx, "e", []byte("e"), time.Minute))
	assert.Equal(t, []string{"c", "d", "e"}, s.Keys())
}

func TestMaxBytesCountsKeyAndValue(t *testing.T) {
	t.Parallel()
	s := memstore.New(memstore.WithMaxBytes(100))
	ctx := t.Context()
	assert.Equal(t, 100, s.Limits().MaxEntrySize, "the largest entry is the bound, key and value together")
	for i := range 5 {
		// 2-byte key + 30-byte value = 32 bytes: three fit in 100.
		require.NoError(t, s.Set(ctx, fmt.Sprintf("k%d", i), make([]byte, 30), time.Minute))
	}
	assert.Equal(t, []string{"k2", "k3", "k4"}, s.Keys())
	assert.Equal(t, 96, s.Size())

	// "big" + 98 bytes is 101: one byte over, whichever write sends it.
	big := make([]byte, 98)
	assert.ErrorIs(t, s.Set(ctx, "big", big, time.Minute), store.ErrTooLarge)
	_, err := s.SetIfAbsent(ctx, "big", big, time.Minute)
	assert.ErrorIs(t, err, store.ErrTooLarge)
	_, err = s.CompareAndSwap(ctx, "k2", make([]byte, 30), make([]byte, 99), time.Minute) // 2 + 99
	assert.ErrorIs(t, err, store.ErrTooLarge)
	assert.Equal(t, []string{"k2", "k3", "k4"}, s.Keys(), "a refused write evicts nothing")

	require.NoError(t, s.Set(ctx, "fit", make([]byte, 97), time.Minute), "exactly the bound fits")
	assert.Equal(t, []string{"fit"}, s.Keys(), "evicting everything else")
	assert.Equal(t, 100, s.Size())
}

func TestSetIfAbsentIsIdempotent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		ctx := context.Background()
		stored, err := s.SetIfAbsent(ctx, "lock", []byte("token"), time.Minute)
		require.NoError(t, err)
		require.True(t, stored)
		time.Sleep(30 * time.Second)
		stored, err = s.SetIfAbsent(ctx, "lock", []byte("token"), time.Hour)
		require.NoError(t, err)
		assert.True(t, stored, "a retry finds its own value")
		time.Sleep(30 * time.Second)
		assert.Zero(t, s.Len(), "and changes nothing: the first call's TTL stands")
	})
}

func TestCompareAndSwap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		ctx := context.Background()
		require.NoError(t, s.Set(ctx, "lease", []byte("t1"), time.Second))
		swapped, err := s.CompareAndSwap(ctx, "lease", []byte("t1"), []byte("t1"), time.Minute)
		require.NoError(t, err)
		assert.True(t, swapped, "a lease swapped for itself")
		time.Sleep(time.Second)
		assert.Equal(t, 1, s.Len(), "lives on its new TTL")

		swapped, err = s.CompareAndSwap(ctx, "lease", []byte("t0"), []byte("t1"), time.Minute)
		require.NoError(t, err)
		assert.True(t, swapped, "already holding value counts as swapped: a retry stays idempotent")

		swapped, err = s.CompareAndSwap(ctx, "lease", []byte("t0"), []byte("t2"), time.Minute)
		require.NoError(t, err)
		assert.False(t, swapped)
		v, _, _ := s.Get(ctx, "lease")
		assert.Equal(t, "t1", string(v))

		time.Sleep(time.Minute)
		swapped, err = s.CompareAndSwap(ctx, "lease", []byte("t1"), []byte("t2"), time.Minute)
		require.NoError(t, err)
		assert.False(t, swapped, "an expired key never matches")
		assert.Zero(t, s.Len())
	})
}

func TestCompareAndDeleteIgnoresExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		ctx := context.Background()
		require.NoError(t, s.Set(ctx, "lock", []byte("tok"), time.Second))
		time.Sleep(time.Second)
		deleted, err := s.CompareAndDelete(ctx, "lock", []byte("tok"))
		require.NoError(t, err)
		assert.False(t, deleted, "an expired entry is absent")
	})
}

func TestBatchOnADoneContextRunsNothing(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ops := []store.Op{{Kind: store.OpSet, Key: "k", Value: []byte("v"), TTL: time.Minute}}
	assert.ErrorIs(t, s.Batch(ctx, ops), context.Canceled)
	assert.Zero(t, s.Len())
}

// TestExpiredEntriesAreFreedByTheNextCall: entries nobody reads again are
// gone after one call of any method, however many there were.
func TestExpiredEntriesAreFreedByTheNextCall(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []memstore.Option
		call func(*memstore.Store)
	}{
		{"Get", nil, func(s *memstore.Store) { _, _, _ = s.Get(context.Background(), "other") }},
		{"Set", nil, func(s *memstore.Store) { _ = s.Set(context.Background(), "other", []byte("v"), time.Hour) }},
		{"Delete", nil, func(s *memstore.Store) { _ = s.Delete(context.Background(), "other") }},
		{"Len", nil, func(s *memstore.Store) { s.Len() }},
		{"bounded Get", []memstore.Option{memstore.WithMaxEntries(1 << 20)}, func(s *memstore.Store) { _, _, _ = s.Get(context.Background(), "other") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := memstore.New(tc.opts...)
				ctx := context.Background()
				for i := range 10_000 {
					require.NoError(t, s.Set(ctx, fmt.Sprintf("old%d", i), []byte("v"), time.Second+time.Duration(i)*time.Microsecond))
				}
				require.NoError(t, s.Set(ctx, "keep", []byte("v"), time.Hour))
				time.Sleep(2 * time.Second)
				tc.call(s)
				assert.LessOrEqual(t, memstore.IndexSize(s), 2, "every expired entry was dropped")
				assert.LessOrEqual(t, memstore.MapPeak(s), 2, "and the map rebuilt small")
				assert.LessOrEqual(t, s.Size(), len("keepv")+len("otherv"))
				assert.Equal(t, []string{"keep"}, s.Keys()[:1])
			})
		})
	}
}

// TestExpiredMemoryIsReturned: what expired entries held is garbage after
// the next call. Not parallel, so the heap is this test's alone; the bound
// is loose (a quarter of what the entries held) so the collector's
// timing cannot make it flaky.
func TestExpiredMemoryIsReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, size = 100_000, 512 // about 60 MB with keys and overhead
		inUse := func() int64 {
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			return int64(m.HeapAlloc)
		}
		ctx := context.Background()
		s := memstore.New()
		base := inUse()
		v := make([]byte, size)
		for i := range n {
			require.NoError(t, s.Set(ctx, fmt.Sprintf("key %d", i), v, time.Minute))
		}
		full := inUse() - base
		require.Greater(t, full, int64(n*size), "the entries are in the heap")

		time.Sleep(time.Minute)
		_, _, _ = s.Get(ctx, "any")
		after := inUse() - base
		t.Logf("heap: %d MB full, %d MB after expiry", full>>20, after>>20)
		assert.Less(t, after, full/4, "expired entries are garbage after the next call")
		runtime.KeepAlive(s)
	})
}

// recorder is a listener that keeps what it is told, in order.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}
func (r *recorder) Connected(complete bool) { r.add(fmt.Sprintf("connected %v", complete)) }
func (r *recorder) Changed(key string)      { r.add(key) }
func (r *recorder) Disconnected(err error)  { r.add("disconnected") }

// take returns what r was told since the last take.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	return e
}

// TestNotifyReportsEachChangeBeforeTheCallReturns: no waiting anywhere;
// once a call returns, the listener has been told.
func TestNotifyReportsEachChangeBeforeTheCallReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		ctx := context.Background()
		require.NoError(t, s.Set(ctx, "p:before", []byte("v"), time.Minute))
		r := &recorder{}
		stop, err := s.Notify("p:", r)
		require.NoError(t, err)
		defer stop()
		assert.Equal(t, []string{"connected true"}, r.take(), "Connected before Notify returns")

		step := func(what string, want []string, call func() error) {
			t.Helper()
			require.NoError(t, call(), what)
			assert.Equal(t, want, r.take(), what)
		}
		v := []byte("v")
		step("Set", []string{"p:a"}, func() error { return s.Set(ctx, "p:a", v, time.Minute) })
		step("a Set outside the prefix", nil, func() error { return s.Set(ctx, "q:a", v, time.Minute) })
		step("an overwrite", []string{"p:a"}, func() error { return s.Set(ctx, "p:a", []byte("w"), time.Minute) })
		step("a SetIfAbsent that stored", []string{"p:b"}, func() error {
			_, err := s.SetIfAbsent(ctx, "p:b", v, time.Minute)
			return err
		})
		step("a SetIfAbsent that did not", nil, func() error {
			_, err := s.SetIfAbsent(ctx, "p:b", []byte("other"), time.Minute)
			return err
		})
		step("an idempotent SetIfAbsent, which changes nothing", nil, func() error {
			_, err := s.SetIfAbsent(ctx, "p:b", v, time.Minute)
			return err
		})
		step("a CompareAndSwap that swapped", []string{"p:b"}, func() error {
			_, err := s.CompareAndSwap(ctx, "p:b", v, []byte("w"), time.Minute)
			return err
		})
		step("a CompareAndSwap that did not", nil, func() error {
			_, err := s.CompareAndSwap(ctx, "p:b", v, []byte("x"), time.Minute)
			return err
		})
		step("a Delete", []string{"p:b"}, func() error { return s.Delete(ctx, "p:b") })
		step("a Delete of a missing key", nil, func() error { return s.Delete(ctx, "p:b") })
		step("a Set", []string{"p:c"}, func() error { return s.Set(ctx, "p:c", v, time.Minute) })
		step("a CompareAndDelete that did not delete", nil, func() error {
			_, err := s.CompareAndDelete(ctx, "p:c", []byte("other"))
			return err
		})
		step("a CompareAndDelete that deleted", []string{"p:c"}, func() error {
			_, err := s.CompareAndDelete(ctx, "p:c", v)
			return err
		})
		step("a batch", []string{"p:d", "p:d"}, func() error {
			return s.Batch(ctx, []store.Op{
				{Kind: store.OpSet, Key: "p:d", Value: v, TTL: time.Second},
				{Kind: store.OpGet, Key: "p:a"},
				{Kind: store.OpDelete, Key: "p:d"},
			})
		})
		step("a Set with a short TTL", []string{"p:e"}, func() error { return s.Set(ctx, "p:e", v, time.Second) })
		time.Sleep(time.Second)
		step("an expiry, at the next call", []string{"p:e"}, func() error { s.Len(); return nil })

		b := memstore.New(memstore.WithMaxEntries(2))
		stop, err = b.Notify("", r)
		require.NoError(t, err)
		defer stop()
		r.take()
		step("two Sets", []string{"a", "b"}, func() error {
			return errors.Join(b.Set(ctx, "a", v, time.Minute), b.Set(ctx, "b", v, time.Minute))
		})
		step("a Set past the bound", []string{"c", "a"}, func() error { return b.Set(ctx, "c", v, time.Minute) })
	})
}

func TestNotifyOverlappingPrefixesAndStop(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	ctx := t.Context()
	all, narrow := &recorder{}, &recorder{}
	stopAll, err := s.Notify("", all)
	require.NoError(t, err)
	stopNarrow, err := s.Notify("a", narrow)
	require.NoError(t, err)
	all.take()
	narrow.take()

	require.NoError(t, s.Set(ctx, "ab", []byte("v"), time.Minute))
	require.NoError(t, s.Set(ctx, "b", []byte("v"), time.Minute))
	assert.Equal(t, []string{"ab", "b"}, all.take())
	assert.Equal(t, []string{"ab"}, narrow.take())

	stopNarrow()
	stopNarrow() // twice is harmless
	require.NoError(t, s.Set(ctx, "ac", []byte("v"), time.Minute))
	assert.Equal(t, []string{"ac"}, all.take())
	assert.Empty(t, narrow.take(), "no call after stop returns")
	stopAll()
}

// blocking is a listener whose Changed waits until released, and
// records whether stop had returned by then.
type blocking struct {
	entered, release chan struct{}
	stopReturned     atomic.Bool
	overlapped       atomic.Bool
}

func (b *blocking) Connected(bool) {}
func (b *blocking) Changed(string) {
	b.entered <- struct{}{}
	<-b.release
	b.overlapped.Store(b.stopReturned.Load())
}
func (b *blocking) Disconnected(error) {}

// TestNotifyStopWaitsForRunningCalls. Not in a bubble: stop blocks on a
// mutex, which synctest.Wait does not count as blocked.
func TestNotifyStopWaitsForRunningCalls(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	l := &blocking{entered: make(chan struct{}), release: make(chan struct{})}
	stop, err := s.Notify("", l)
	require.NoError(t, err)

	setDone := make(chan struct{})
	go func() {
		_ = s.Set(context.Background(), "k", []byte("v"), time.Minute)
		close(setDone)
	}()
	<-l.entered // Changed is running, so Set has not returned

	// The store's lock is free while listeners run.
	_, ok, err := s.Get(context.Background(), "k")
	require.NoError(t, err)
	assert.True(t, ok)

	stopDone := make(chan struct{})
	go func() {
		stop()
		l.stopReturned.Store(true)
		close(stopDone)
	}()
	// Give a stop that does not wait the time to return: a correct one
	// blocks however long this is, so the test cannot fail spuriously.
	time.Sleep(20 * time.Millisecond)
	close(l.release)
	<-setDone
	<-stopDone
	assert.False(t, l.overlapped.Load(), "stop returned while Changed was running")
}

// TestNotifyConcurrentWritersLoseNothing: many writers, one listener
// called from all of them; once every writer returned, every change was
// told.
func TestNotifyConcurrentWritersLoseNothing(t *testing.T) {
	t.Parallel()
	s := memstore.New(memstore.WithMaxEntries(100))
	var mu sync.Mutex
	counts := map[string]int{}
	stop, err := s.Notify("", changedFunc(func(k string) {
		mu.Lock()
		counts[k]++
		mu.Unlock()
	}))
	require.NoError(t, err)
	defer stop()
	const writers, writes = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range writes {
				_ = s.Set(context.Background(), fmt.Sprintf("w%d:%d", w, i), []byte("v"), time.Minute)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, n := range counts {
		total += n
	}
	// Each write is told once, and each of all but the 100 left evicted once.
	assert.Equal(t, writers*writes+writers*writes-100, total)
	assert.Len(t, counts, writers*writes)
}

type changedFunc func(string)

func (f changedFunc) Connected(bool)     {}
func (f changedFunc) Changed(k string)   { f(k) }
func (f changedFunc) Disconnected(error) {}

func TestNotifyRejectsANilListener(t *testing.T) {
	t.Parallel()
	_, err := memstore.New().Notify("", nil)
	assert.Error(t, err)
}
