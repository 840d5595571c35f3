package readthrough_test

// An adversarial review of the root package: each TestReview* test breaks
// one promise of the package doc, Options, or DESIGN.md on purpose, and
// fails while the promise does not hold. Tests count loader and store
// calls; what waits runs in a testing/synctest bubble, where time is the
// bubble's and an elapsed time of zero is exact.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	rt "github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/store"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// reviewMem is a memstore (every capability of it kept, NonBlocking
// included) with a hook after each Get, to act between a caller's read and
// what the caller does with it.
type reviewMem struct {
	*memstore.Store
	afterGet func(key string, ok bool)
}

func (s *reviewMem) Get(ctx context.Context, key string) ([]byte, bool, error) {
	b, ok, err := s.Store.Get(ctx, key)
	if h := s.afterGet; h != nil {
		h(key, ok)
	}
	return b, ok, err
}

// reviewGOS is a memstore that also leases on read (store.GetOrSetter),
// as redisstore does, with a hook before each GetOrSet.
type reviewGOS struct {
	*memstore.Store
	mu          sync.Mutex // makes GetOrSet atomic against itself
	beforeGetOr func()
}

func (s *reviewGOS) GetOrSet(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	if h := s.beforeGetOr; h != nil {
		h()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		stored, err := s.Store.SetIfAbsent(ctx, key, value, ttl)
		if err != nil || stored {
			return nil, stored, err
		}
		cur, ok, err := s.Store.Get(ctx, key)
		if err != nil || ok {
			return cur, false, err
		}
	}
}

var _ store.GetOrSetter = (*reviewGOS)(nil)

// --- found during the review and fixed in 15f0041 while it ran; kept as
// regression tests.

// TestReviewLockDisabledCachesLoads: with Lock.Disabled "only the
// in-process single-flight remains": the load is still written back. It
// was not (fly ended acqUnleased with loadOnly), so every call loaded.
func TestReviewLockDisabledCachesLoads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		c := newCache[string, string](t, mem, &rt.Options[string, string]{Lock: rt.LockOptions{Disabled: true}})
		defer c.Close()
		l := countLoads(echo)
		for range 3 {
			_, err := c.GetOrLoad(context.Background(), "k", l.load)
			require.NoError(t, err)
		}
		assert.Equal(t, 1, l.n(), "one load, then hits")
		assert.Equal(t, []string{"k"}, mem.Keys(), "the value was written back")
	})
}

// TestReviewUnreadableBytesDoNotStallTheFlight: a store whose reads keep
// returning bytes the cache cannot use (cut on the way) must still serve
// callers from the loader. acquire used to retry compare-and-swap from the
// cut bytes in a loop with no backoff until LoadTimeout, then fail every
// caller: the store had become a dependency.
func TestReviewUnreadableBytesDoNotStallTheFlight(t *testing.T) {
	// Not in a bubble: a spinning flight never blocks, so a bubble's clock
	// would never reach LoadTimeout. A short real LoadTimeout bounds it.
	mem := memstore.New()
	_, err := newCache[string, string](t, mem, nil).GetOrLoad(context.Background(), "k", echo)
	require.NoError(t, err)
	fs := storetest.NewFaultyStore(mem)
	c := newCache[string, string](t, fs, &rt.Options[string, string]{LoadTimeout: 200 * time.Millisecond, StoreTimeout: 50 * time.Millisecond})
	defer c.Close()

	fs.Inject(storetest.OpGet, storetest.Fault{Truncate: 1}) // every read, from now on
	l := countLoads(echo)
	v, err := c.GetOrLoad(context.Background(), "k", l.load)
	require.NoError(t, err, "the loader serves the call")
	assert.Equal(t, "value of k", v)
	assert.Less(t, fs.TotalCalls(), 10, "a bounded number of store calls, not a spin")
}

// --- open findings

// TestReviewBatchKeyFuncPanicLeavesNoOrphanFlight: FetchMany registers a
// flight for each key as it derives the keys; a KeyFunc that panics on a
// later key used to leave the earlier keys' flights in the table with no
// goroutine to run them, on a context that ends only at LoadTimeout. Every
// GetOrLoad of those keys then joined the orphan and waited LoadTimeout
// for a timeout error.
func TestReviewBatchKeyFuncPanicLeavesNoOrphanFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[string, string](t, memstore.New(), &rt.Options[string, string]{
			KeyFunc: func(k string) string {
				if k == "boom" {
					panic("key func exploded")
				}
				return k
			},
		})
		defer c.Close()
		func() {
			defer func() { assert.Equal(t, "key func exploded", recover()) }()
			_, _ = c.FetchMany(context.Background(), []string{"a", "boom"}, func(context.Context, []string) (map[string]string, error) {
				return nil, nil
			})
		}()
		l := countLoads(echo)
		start := time.Now()
		v, err := c.GetOrLoad(context.Background(), "a", l.load)
		require.NoError(t, err, "key a is not poisoned")
		assert.Equal(t, "value of a", v)
		assert.Equal(t, 1, l.n())
		assert.Zero(t, time.Since(start), "no wait on an orphaned flight")
	})
}

// TestReviewLostLeaseReplyLeavesNoLease: a lease-taking call whose reply
// is lost (the store applied it; the client saw an error) makes the flight
// load without the store, as designed, but the lease it did take stays in
// the key for Lock.TTL: every other process waits on a lease nobody holds.
// The token is unique, so a best-effort conditional release of exactly
// those bytes after the answer is safe.
func TestReviewLostLeaseReplyLeavesNoLease(t *testing.T) {
	for _, op := range []storetest.Op{storetest.OpSetIfAbsent, storetest.OpCompareAndSwap} {
		t.Run(string(op), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := memstore.New()
				if op == storetest.OpCompareAndSwap {
					// An expired value (FailSafe keeps it), which a flight
					// leases by compare-and-swap.
					seed := newCache[string, string](t, mem, &rt.Options[string, string]{TTL: time.Second, FailSafe: rt.FailSafeOptions{MaxStale: time.Hour}})
					_, err := seed.GetOrLoad(context.Background(), "k", echo)
					require.NoError(t, err)
					time.Sleep(2 * time.Second)
				}
				fs := storetest.NewFaultyStore(mem)
				fs.Inject(op, storetest.Fault{LoseReply: true, Times: 1})
				a := newCache[string, string](t, fs, &rt.Options[string, string]{TTL: time.Second})
				defer a.Close()
				_, err := a.GetOrLoad(context.Background(), "k", echo)
				require.NoError(t, err)
				synctest.Wait()

				b := newCache[string, string](t, mem, &rt.Options[string, string]{TTL: time.Second})
				defer b.Close()
				start := time.Now()
				_, err = b.GetOrLoad(context.Background(), "k", echo)
				require.NoError(t, err)
				assert.Zero(t, b.Stats().LockWaits, "no lease left to wait on")
				assert.Zero(t, time.Since(start), "another process is not held for Lock.TTL")
			})
		})
	}
}

// TestReviewLeaseOnReadRacingCloseLeavesNoLease: on a store that leases on
// read, Fetch takes the key's lease before it starts its flight; when
// Close lands in between, the flight is refused (ErrClosed) and the lease
// stays for Lock.TTL, holding up every other process.
func TestReviewLeaseOnReadRacingCloseLeavesNoLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &reviewGOS{Store: memstore.New()}
		c := newCache[string, string](t, rt.Store(s), nil)
		var once sync.Once
		s.beforeGetOr = func() { once.Do(func() { require.NoError(t, c.Close()) }) }
		_, err := c.GetOrLoad(context.Background(), "k", echo)
		require.ErrorIs(t, err, rt.ErrClosed)
		synctest.Wait()
		assert.Empty(t, s.Keys(), "no lease left behind by a call that never loaded")
	})
}

// TestReviewRecorderPanicInListenerStaysInTheCache: a Listener's methods
// run on the store's goroutines (redisstore's reader, for one). A Recorder
// that panics on a near eviction or flush there crashes the process; the
// package promises nothing panics in a goroutine that is not the caller's.
func TestReviewRecorderPanicInListenerStaysInTheCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &linkStore{Store: memstore.New()}
		rec := recorderFunc(func(e rt.Event) {
			if e.Kind == rt.EventNearEvict || e.Kind == rt.EventNearFlush {
				panic("recorder exploded")
			}
		})
		c := newCache(t, rt.Store(s), &rt.Options[string, string]{Near: rt.NearOptions{MaxEntries: 10}, Recorder: rec})
		defer c.Close()
		for range 2 {
			_, err := c.GetOrLoad(context.Background(), "k", echo)
			require.NoError(t, err)
		}
		require.EqualValues(t, 1, c.Stats().NearEntries)
		onStoreGoroutine := func(f func(store.Listener)) (p any) {
			done := make(chan struct{})
			go func() { // the store's goroutine: a panic here would end the process
				defer close(done)
				defer func() { p = recover() }()
				s.each(f)
			}()
			<-done
			return p
		}
		assert.Nil(t, onStoreGoroutine(func(l store.Listener) { l.Changed("k") }), "Changed")
		_, _ = c.GetOrLoad(context.Background(), "k", echo)
		_, _ = c.GetOrLoad(context.Background(), "k", echo)
		assert.Nil(t, onStoreGoroutine(func(l store.Listener) { l.Disconnected(errors.New("reset")) }), "Disconnected")
	})
}

type recorderFunc func(rt.Event)

func (f recorderFunc) Record(e rt.Event) { f(e) }

// TestReviewBatchOverAWrapperLoadsOnce: a wrapper that implements every
// capability and answers ErrUnsupported for what its store lacks is what
// package store asks of wrappers. Over memstore (no GetOrSet), the first
// batch's GetOrSet ops each fail with ErrUnsupported, and every key went on
// as a single flight: one batch-loader call per key instead of one.
func TestReviewBatchOverAWrapperLoadsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache[int, string](t, fs, nil)
		defer c.Close()
		u := newUpstream(10)
		m, err := c.GetOrLoadMany(context.Background(), keysUpTo(10), u.load)
		require.NoError(t, err)
		assert.Len(t, m, 10)
		assert.Equal(t, 1, u.callCount(), "one batch-loader call for ten missing keys")
	})
}

// TestReviewJoinerIsNotServedPastFreshness: on a store that blocks, a
// flight hands out its answer, then stays joinable while it writes back.
// A write that hangs keeps it joinable for StoreTimeout, and callers that
// join meanwhile get the flight's value even when it stopped being fresh
// long before (a short TTL, or one set by SetTTL).
func TestReviewJoinerIsNotServedPastFreshness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		fs.Inject(storetest.OpCompareAndSwap, storetest.Fault{Delay: time.Hour}) // the write-back hangs
		c := newCache[string, string](t, fs, &rt.Options[string, string]{TTL: 10 * time.Millisecond, StoreTimeout: time.Second})
		defer c.Close()
		l := countLoads(echo)
		r, err := c.Fetch(context.Background(), "k", l.load)
		require.NoError(t, err)
		require.Equal(t, rt.SourceLoader, r.Source)

		time.Sleep(500 * time.Millisecond) // 490 ms past the value's freshness; the write still hangs
		r, err = c.Fetch(context.Background(), "k", l.load)
		require.NoError(t, err)
		assert.True(t, time.Now().Before(r.Expires), "served %v past its freshness (source %v)", time.Since(r.Expires), r.Source)
	})
}

// TestReviewEveryCloseWaits: Close "waits for each to return"; a second
// Close made while the first is waiting returned at once, before the loads
// it is meant to wait for had ended (a deferred Close in a second owner,
// an io.Closer closed twice).
func TestReviewEveryCloseWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[string, string](t, memstore.New(), nil)
		release := make(chan struct{})
		var loading atomic.Bool
		go func() {
			_, _ = c.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
				loading.Store(true)
				<-release // ignores its context
				loading.Store(false)
				return "v", nil
			})
		}()
		synctest.Wait()
		require.True(t, loading.Load())
		go func() { _ = c.Close() }()
		synctest.Wait()
		second := make(chan struct{})
		go func() { _ = c.Close(); close(second) }()
		synctest.Wait()
		select {
		case <-second:
			assert.False(t, loading.Load(), "the second Close returned while the loader still ran")
		default:
		}
		close(release)
		<-second
	})
}

// TestReviewValueTypesTheCodecCannotDecodeAreRejected: New rejects a value
// type the default codec can never encode; a non-empty interface encodes
// fine but never decodes (json cannot unmarshal into fmt.Stringer), so
// every entry is written, then read as a decode error, and every call
// loads. New accepts it.
func TestReviewValueTypesTheCodecCannotDecodeAreRejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := rt.New[string, fmt.Stringer](memstore.New(), nil)
		if err != nil {
			assert.ErrorIs(t, err, rt.ErrInvalidOptions)
			return
		}
		defer c.Close()
		l := countLoads(func(context.Context, string) (fmt.Stringer, error) { return time.Second, nil })
		for range 3 {
			_, err := c.GetOrLoad(context.Background(), "k", l.load)
			require.NoError(t, err)
		}
		assert.Equal(t, 1, l.n(), "accepted, so it caches (DecodeErrors: %d)", c.Stats().DecodeErrors)
	})
}

// TestReviewOwnRefreshEvictsTheNearCopy: over a store that cannot notify,
// a background refresh of this process writes a new value, but the stale
// near copy it replaced stays for Near.MaxAge: every hit on it is served
// stale although the store holds a fresh value, and starts one more
// refresh flight that reads the store only to find it has nothing to do.
// Set and Delete drop the local copy; a write-back does not.
func TestReviewOwnRefreshEvictsTheNearCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(storetest.Plain(memstore.New()))
		c := newCache[string, string](t, fs, &rt.Options[string, string]{
			TTL: time.Second, StaleWhileRevalidate: time.Hour,
			Near: rt.NearOptions{MaxEntries: 10, MaxAge: time.Minute},
		})
		defer c.Close()
		var n atomic.Int32
		load := func(context.Context, string) (string, error) { return fmt.Sprint("v", n.Add(1)), nil }
		_, err := c.GetOrLoad(context.Background(), "k", load)
		require.NoError(t, err)
		synctest.Wait()
		_, _ = c.GetOrLoad(context.Background(), "k", load) // the near copy
		time.Sleep(2 * time.Second)

		r, err := c.Fetch(context.Background(), "k", load) // stale: the refresh starts
		require.NoError(t, err)
		require.Equal(t, "v1", r.Value)
		synctest.Wait()
		require.EqualValues(t, 1, c.Stats().Refreshes)

		fs.ResetCalls()
		for range 10 {
			r, err = c.Fetch(context.Background(), "k", load)
			require.NoError(t, err)
			synctest.Wait()
		}
		assert.Equal(t, "v2", r.Value, "the refreshed value, not the stale copy (source %v)", r.Source)
		assert.LessOrEqual(t, fs.TotalCalls(), 1, "hits after the refresh cost no store calls")
		assert.Zero(t, c.Stats().RefreshSkips, "no refresh started for a key already refreshed")
	})
}

// TestReviewWaiterOnALeaseReadBeforeItsFlightIsWoken: a call reads the
// key and finds another process's lease; that process writes its value
// (notifying) before the call's flight starts watching the key. The flight
// then waits on the lease it read without reading again, and sleeps until
// its safety-net poll (NotifiedPollInterval, Lock.TTL/10 = 500 ms by
// default) for a value that is already in the store.
func TestReviewWaiterOnALeaseReadBeforeItsFlightIsWoken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := &reviewMem{Store: memstore.New()}
		other := newCache[string, string](t, mem.Store, nil)
		defer other.Close()
		release := make(chan struct{})
		go func() {
			_, _ = other.GetOrLoad(context.Background(), "k", func(ctx context.Context, k string) (string, error) {
				<-release
				return echo(ctx, k)
			})
		}()
		synctest.Wait()

		c := newCache[string, string](t, rt.Store(mem), nil)
		defer c.Close()
		gate := make(chan struct{})
		var held atomic.Bool
		mem.afterGet = func(string, bool) { // hold the caller after its first read
			if held.CompareAndSwap(false, true) {
				<-gate
			}
		}
		type res struct {
			r   rt.Result[string]
			err error
			at  time.Time
		}
		done := make(chan res, 1)
		go func() {
			r, err := c.Fetch(context.Background(), "k", echo)
			done <- res{r, err, time.Now()}
		}()
		synctest.Wait() // it read the lease
		close(release)
		synctest.Wait() // the other process's value landed, notified
		opened := time.Now()
		close(gate)
		got := <-done
		require.NoError(t, got.err)
		assert.Equal(t, "value of k", got.r.Value)
		assert.Zero(t, got.at.Sub(opened), "the value in the store is read at once, not at the next poll")
	})
}

// TestReviewLockDisabledLoadsOncePerProcess: with Lock.Disabled the
// promise is one load per key per process. A call that read the key
// before this process's flight wrote it back, and started its own flight
// after that one ended, loads again: acquireUnleased trusts the read made
// before the flight existed. (With leases, the set-if-absent fails and the
// flight reads again.)
func TestReviewLockDisabledLoadsOncePerProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := &reviewMem{Store: memstore.New()}
		c := newCache[string, string](t, rt.Store(mem), &rt.Options[string, string]{Lock: rt.LockOptions{Disabled: true}})
		defer c.Close()
		release := make(chan struct{})
		l := countLoads(func(ctx context.Context, k string) (string, error) { <-release; return echo(ctx, k) })
		go func() { _, _ = c.GetOrLoad(context.Background(), "k", l.load) }()
		synctest.Wait() // loading

		gate := make(chan struct{})
		var held atomic.Bool
		mem.afterGet = func(string, bool) { // hold the caller after its first read
			if held.CompareAndSwap(false, true) {
				<-gate
			}
		}
		done := make(chan error, 1)
		go func() { _, err := c.GetOrLoad(context.Background(), "k", l.load); done <- err }()
		synctest.Wait() // the second call read a miss
		close(release)
		synctest.Wait() // the first load was written back and its flight ended
		close(gate)
		require.NoError(t, <-done)
		assert.Equal(t, 1, l.n(), "one load per key per process")
	})
}

// reviewPanicCodec panics when asked to decode the payload "boom".
type reviewPanicCodec struct{}

func (reviewPanicCodec) Marshal(v string) ([]byte, error) { return []byte(v), nil }
func (reviewPanicCodec) Unmarshal(b []byte) (string, error) {
	if string(b) == "boom" {
		panic("codec exploded")
	}
	return string(b), nil
}

// TestReviewBatchPanicReachesJoinedCallers: a batch whose goroutine panics
// ends its members' flights with the panic, except members it had already
// handed to a single flight of their own (mSingle): when the panic comes
// before that flight started, nothing ends it, and a caller that joined it
// gets "did not finish within LoadTimeout" at once, although no load ran
// and no LoadTimeout passed.
func TestReviewBatchPanicReachesJoinedCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		opts := func() *rt.Options[string, string] { return &rt.Options[string, string]{Codec: reviewPanicCodec{}} }
		// Another process holds a's lease, loading; b holds a value whose decoding panics.
		other := newCache(t, rt.Store(mem), opts())
		defer other.Close()
		release := make(chan struct{})
		go func() {
			_, _ = other.GetOrLoad(context.Background(), "a", func(context.Context, string) (string, error) { <-release; return "A", nil })
		}()
		_, err := other.GetOrLoad(context.Background(), "b", func(context.Context, string) (string, error) { return "boom", nil })
		require.NoError(t, err)
		synctest.Wait()

		s := &reviewMem{Store: mem}
		c := newCache(t, storetest.Plain(s), opts()) // no batches: one read per key, in order
		defer c.Close()
		gate := make(chan struct{})
		var held atomic.Bool
		s.afterGet = func(k string, _ bool) {
			if k == "a" && held.CompareAndSwap(false, true) {
				<-gate // the batch's read of a; later reads go through
			}
		}
		go func() {
			defer func() { _ = recover() }()
			_, _ = c.FetchMany(context.Background(), []string{"a", "b"}, func(context.Context, []string) (map[string]string, error) {
				return nil, nil
			})
		}()
		synctest.Wait() // the batch holds a's flight and reads a
		single := make(chan any, 1)
		go func() {
			defer func() { single <- recover() }()
			_, err := c.GetOrLoad(context.Background(), "a", func(context.Context, string) (string, error) { return "A", nil })
			single <- err
		}()
		synctest.Wait() // joined the batch's flight for a
		close(gate)
		got := <-single
		close(release)
		if err, ok := got.(error); ok {
			assert.NotContains(t, err.Error(), "LoadTimeout", "no LoadTimeout passed, and no load of a ran")
		}
	})
}

// TestReviewStampedeOverABlockingStore: the one-load promise over a store
// that blocks (so the cache bounds each call on a goroutine, and writes back
// after answering), with several processes, each many callers, and a
// notifying link.
func TestReviewStampedeOverABlockingStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		var loads atomic.Int32
		load := func(ctx context.Context, k string) (string, error) {
			loads.Add(1)
			time.Sleep(50 * time.Millisecond)
			return echo(ctx, k)
		}
		var wg sync.WaitGroup
		for range 4 {
			fs := storetest.NewFaultyStore(mem)
			fs.Inject(storetest.OpCompareAndSwap, storetest.Fault{Delay: 5 * time.Millisecond})
			c := newCache[string, string](t, fs, nil)
			defer c.Close()
			for range 8 {
				wg.Go(func() {
					v, err := c.GetOrLoad(context.Background(), "k", load)
					assert.NoError(t, err)
					assert.Equal(t, "value of k", v)
				})
			}
		}
		wg.Wait()
		assert.EqualValues(t, 1, loads.Load())
	})
}

// TestReviewFailSafeNeverServesPastMaxStale: fail-safe serves a value "at
// most MaxStale past its TTL". The fallback is chosen when the flight
// reads the key, and served when the load fails, however long after: a
// load that fails (or times out) after the window closed still hands out
// the value, past MaxStale, and past the moment the store itself dropped
// it.
func TestReviewFailSafeNeverServesPastMaxStale(t *testing.T) {
	for _, tc := range []struct {
		name string
		load rt.Loader[string, string]
	}{
		{"a load that fails late", func(context.Context, string) (string, error) {
			time.Sleep(20 * time.Second)
			return "", errors.New("upstream down")
		}},
		{"LoadTimeout", func(context.Context, string) (string, error) {
			time.Sleep(time.Hour) // ignores its context
			return "late", nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := memstore.New()
				c := newCache[string, string](t, mem, &rt.Options[string, string]{
					TTL: time.Second, LoadTimeout: 30 * time.Second,
					FailSafe: rt.FailSafeOptions{MaxStale: 10 * time.Second},
				})
				_, err := c.GetOrLoad(context.Background(), "k", echo)
				require.NoError(t, err)
				time.Sleep(10 * time.Second) // 9 s past its TTL: within MaxStale

				r, err := c.Fetch(context.Background(), "k", tc.load)
				if err == nil {
					past := time.Since(r.Expires)
					assert.LessOrEqual(t, past, 10*time.Second, "served %v past its TTL (source %v), MaxStale is 10s", past, r.Source)
				}
				time.Sleep(time.Hour)
				require.NoError(t, c.Close())
			})
		})
	}
}

// TestReviewUnfencedLeaseNeverOverwritesASet: on a store without
// compare-and-swap, a flight takes over a key holding bytes it cannot use
// by writing its lease, then reading who won. A Set of this process made
// between the flight's read and that write is overwritten by the lease, and
// the flight, superseded, writes nothing back and releases nothing: the
// Set's value is gone, and the key holds a lease no one will release.
// Within one process the flight's write lock could order the two.
func TestReviewUnfencedLeaseNeverOverwritesASet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		require.NoError(t, mem.Set(context.Background(), "k", []byte("junk from another writer"), time.Hour))
		s := &reviewSetHook{Store: storetest.Plain(mem)}
		c := newCache[string, string](t, rt.Store(s), nil)
		defer c.Close()
		var once sync.Once
		s.beforeSet = func() {
			// A Set of this process, made while the flight writes its lease:
			// from another goroutine, as a request handler would.
			once.Do(func() { go func() { assert.NoError(t, c.Set(context.Background(), "k", "from Set")) }() })
		}
		_, err := c.GetOrLoad(context.Background(), "k", echo)
		require.NoError(t, err)
		synctest.Wait()
		r, ok, err := c.Peek(context.Background(), "k")
		require.NoError(t, err)
		assert.True(t, ok, "the key holds a value, not a lease")
		assert.Equal(t, "from Set", r.Value, "the Set made during the flight stands")
	})
}

// reviewSetHook runs beforeSet before each Set that is not the hook's own.
type reviewSetHook struct {
	rt.Store
	beforeSet func()
	inHook    atomic.Bool
}

func (s *reviewSetHook) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if h := s.beforeSet; h != nil && s.inHook.CompareAndSwap(false, true) {
		h()
		defer s.inHook.Store(false)
	}
	return s.Store.Set(ctx, key, value, ttl)
}

// reviewNilRecorder is a Recorder whose nil pointer cannot record.
type reviewNilRecorder struct{ n int }

func (r *reviewNilRecorder) Record(rt.Event) { r.n++ }

// TestReviewTypedNilOptionsMeanNone: "Recorder ... Nil: none but Stats".
// New rejects a store that is a typed nil (isNil), but a Recorder (or
// Codec) that is an interface holding a nil pointer is taken as set, and
// the first event panics in the caller.
func TestReviewTypedNilOptionsMeanNone(t *testing.T) {
	var rec *reviewNilRecorder
	c, err := rt.New[string, string](memstore.New(), &rt.Options[string, string]{Recorder: rec})
	if err != nil {
		assert.ErrorIs(t, err, rt.ErrInvalidOptions)
		return
	}
	defer c.Close()
	assert.NotPanics(t, func() { _, _ = c.GetOrLoad(context.Background(), "k", echo) })
}

// TestReviewSoftLoadTimeoutBoundsABatchOnce: SoftLoadTimeout "returns [the
// expired value] after this long instead of waiting for a slow load".
// FetchMany awaits its keys one after another, each with a SoftLoadTimeout
// timer of its own started when its turn comes, so a batch of n keys
// behind one slow load waits n × SoftLoadTimeout.
func TestReviewSoftLoadTimeoutBoundsABatchOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[int, string](t, memstore.New(), &rt.Options[int, string]{
			TTL: time.Second, SoftLoadTimeout: 100 * time.Millisecond,
			FailSafe: rt.FailSafeOptions{MaxStale: time.Hour},
		})
		defer c.Close()
		u := newUpstream(5)
		_, err := c.GetOrLoadMany(context.Background(), keysUpTo(5), u.load)
		require.NoError(t, err)
		time.Sleep(2 * time.Second)

		u.delay = 5 * time.Second
		start := time.Now()
		outs, err := c.FetchMany(context.Background(), keysUpTo(5), u.load)
		require.NoError(t, err)
		for k, o := range outs {
			assert.Equal(t, rt.SourceStale, o.Source, "key %d", k)
		}
		assert.Equal(t, 100*time.Millisecond, time.Since(start), "one SoftLoadTimeout for the batch, not one per key")
	})
}

// TestReviewStoreTimeoutAboveLoadTimeoutIsRejected: a store call a flight
// makes is bounded by the flight's context (LoadTimeout) as well as by
// StoreTimeout. With StoreTimeout at or above LoadTimeout, a store that
// hangs ends the flight before the store call times out, and callers get a
// LoadTimeout error with no load run: the store has become a dependency.
// New accepts the combination.
func TestReviewStoreTimeoutAboveLoadTimeoutIsRejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c, err := rt.New[string, string](fs, &rt.Options[string, string]{StoreTimeout: 2 * time.Second, LoadTimeout: time.Second})
		if err != nil {
			assert.ErrorIs(t, err, rt.ErrInvalidOptions)
			return
		}
		defer c.Close()
		fs.Inject(storetest.OpSetIfAbsent, storetest.Fault{Delay: time.Hour}) // the lease call hangs
		l := countLoads(echo)
		v, err := c.GetOrLoad(context.Background(), "k", l.load)
		require.NoError(t, err, "accepted, so the loader serves the call when the store hangs")
		assert.Equal(t, "value of k", v)
	})
}
