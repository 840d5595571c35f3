package readthrough_test

// The flight, bounded: each test here breaks one promise of a flight on
// purpose (a panic anywhere, Goexit, a loader that ignores its context, a
// load longer than the lease, Close, a write that hangs, a reply lost).

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

	rt "github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recoverAll runs n concurrent calls of f, each recovering, and returns
// what each recovered (nil for a call that returned).
func recoverAll(n int, f func()) []any {
	out := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer func() { out[i] = recover() }()
			f()
		})
	}
	wg.Wait()
	return out
}

type panicCodec struct{}

func (panicCodec) Marshal(string) ([]byte, error)   { panic("codec exploded") }
func (panicCodec) Unmarshal([]byte) (string, error) { return "", errors.New("never") }

// panicStore panics in SetIfAbsent: a store call inside the flight.
type panicStore struct{ rt.Store }

func (panicStore) SetIfAbsent(context.Context, string, []byte, time.Duration) (bool, error) {
	panic("store exploded")
}

// TestPanicAnywhereInAFlightReachesEveryCaller: a panic in the codec, in
// IsNotFound or in a store call made by the flight used to crash the
// process (singleflight's DoChan re-panics on a goroutine of its own). Now
// each waiting caller gets the panic in its own goroutine, the process
// survives, and the key is usable at once: no lease is left behind.
func TestPanicAnywhereInAFlightReachesEveryCaller(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value any
		cache func(s rt.Store) (*rt.Cache[string, string], error)
		load  rt.Loader[string, string]
	}{
		{"Codec.Marshal", "codec exploded", func(s rt.Store) (*rt.Cache[string, string], error) {
			return rt.New(s, &rt.Options[string, string]{Codec: panicCodec{}})
		}, echo},
		{"IsNotFound", "is-not-found exploded", func(s rt.Store) (*rt.Cache[string, string], error) {
			return rt.New(s, &rt.Options[string, string]{IsNotFound: func(error) bool { panic("is-not-found exploded") }})
		}, func(context.Context, string) (string, error) { return "", errors.New("upstream 500") }},
		{"store call", "store exploded", func(s rt.Store) (*rt.Cache[string, string], error) {
			return rt.New[string, string](panicStore{storetest.Plain(s)}, nil)
		}, echo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := memstore.New()
				c, err := tc.cache(mem)
				require.NoError(t, err)
				release := make(chan struct{})
				load := func(ctx context.Context, k string) (string, error) { <-release; return tc.load(ctx, k) }
				var got []any
				done := make(chan struct{})
				go func() {
					got = recoverAll(10, func() { _, _ = c.GetOrLoad(context.Background(), "k", load) })
					close(done)
				}()
				synctest.Wait()
				close(release)
				<-done
				for i, p := range got {
					assert.Equal(t, tc.value, p, "caller %d re-panics with the original value", i)
				}
				synctest.Wait()
				// Another process loads the key at once: no lease was left.
				other := newCache[string, string](t, mem, nil)
				start := time.Now()
				v, err := other.GetOrLoad(context.Background(), "k", echo)
				require.NoError(t, err)
				assert.Equal(t, "value of k", v)
				assert.Zero(t, time.Since(start), "the key is usable at once")
				assert.Zero(t, other.Stats().LockWaits)
			})
		})
	}
}

// TestLoaderGoexitGivesCallersAnError: a loader that calls runtime.Goexit
// (t.FailNow in a fake repository) used to leave its callers waiting
// forever on context.Background().
func TestLoaderGoexitGivesCallersAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		c := newCache[string, string](t, mem, nil)
		release := make(chan struct{})
		errs := make(chan error, 5)
		for range 5 {
			go func() {
				_, err := c.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
					<-release
					runtime.Goexit()
					return "unreachable", nil
				})
				errs <- err
			}()
		}
		synctest.Wait()
		close(release)
		for range 5 {
			assert.ErrorIs(t, <-errs, rt.ErrLoaderExited)
		}
		synctest.Wait()
		assert.Empty(t, mem.Keys(), "the lease is released")
	})
}

// TestLoadTimeoutBoundsEveryCaller: a loader that ignores its context used
// to keep callers waiting past LoadTimeout (2s with LoadTimeout 100ms).
// Every caller returns at LoadTimeout, the next call starts a fresh load
// rather than joining the stuck one, and Close waits for the stuck loader.
func TestLoadTimeoutBoundsEveryCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[string, string](t, memstore.New(), &rt.Options[string, string]{LoadTimeout: 100 * time.Millisecond})
		var loads, running atomic.Int32
		stuck := func(context.Context, string) (string, error) {
			loads.Add(1)
			running.Add(1)
			defer running.Add(-1)
			time.Sleep(2 * time.Second) // ignores ctx
			return "late", nil
		}
		start := time.Now()
		errs := make(chan error, 8)
		for range 8 {
			go func() {
				_, err := c.GetOrLoad(context.Background(), "k", stuck)
				errs <- err
			}()
		}
		for range 8 {
			err := <-errs
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		}
		assert.Equal(t, 100*time.Millisecond, time.Since(start), "every caller left at LoadTimeout")
		assert.EqualValues(t, 1, loads.Load())

		_, err := c.GetOrLoad(context.Background(), "k", stuck)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.EqualValues(t, 2, loads.Load(), "a fresh load, not a join of the stuck one")
		assert.EqualValues(t, 2, running.Load())

		require.NoError(t, c.Close())
		assert.Zero(t, running.Load(), "Close waited for the loaders that ignored their context")
		assert.Equal(t, 2*time.Second+100*time.Millisecond, time.Since(start))
	})
}

// TestLongLoadRunsOnceAcrossProcesses: with the default options (Lock.TTL
// 5s, LoadTimeout 30s), a 6s load used to run once per process, because the
// lease expired under it and waiters gave up after Lock.TTL. The holder now
// keeps its lease alive while it loads.
func TestLongLoadRunsOnceAcrossProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		var loads atomic.Int32
		load := func(context.Context, string) (string, error) {
			loads.Add(1)
			time.Sleep(6 * time.Second)
			return "slow", nil
		}
		var wg sync.WaitGroup
		for range 4 {
			c := newCache[string, string](t, mem, nil)
			wg.Go(func() {
				v, err := c.GetOrLoad(context.Background(), "k", load)
				assert.NoError(t, err)
				assert.Equal(t, "slow", v)
			})
			time.Sleep(100 * time.Millisecond)
		}
		wg.Wait()
		assert.EqualValues(t, 1, loads.Load(), "one load across four processes")
	})
}

// TestCrashedHolderFreesTheKeyWithinLockTTL: a holder that stops keeping
// its lease alive (its process died: here, every store call it makes
// fails) frees the key within Lock.TTL, and a waiter loads.
func TestCrashedHolderFreesTheKeyWithinLockTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		fs := storetest.NewFaultyStore(mem)
		holder := newCache[string, string](t, fs, nil)
		hang := make(chan struct{})
		go func() {
			_, _ = holder.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
				<-hang
				return "", errors.New("never")
			})
		}()
		synctest.Wait()
		fs.InjectAll(storetest.Fault{}) // the holder is gone: no keep-alive, no release
		leased := time.Now()

		waiter := newCache[string, string](t, mem, nil)
		r, err := waiter.Fetch(context.Background(), "k", echo)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceLoader, r.Source)
		waited := time.Since(leased)
		assert.LessOrEqual(t, waited, rt.DefaultLockTTL+rt.DefaultLockTTL/10, "freed within Lock.TTL (plus one safety-net poll)")
		assert.GreaterOrEqual(t, waited, rt.DefaultLockTTL-rt.DefaultLockTTL/3, "not before the lease could have lapsed")
		close(hang)
	})
}

// TestCloseCancelsAndWaitsForEverything: loads whose callers all left,
// loads that went on after SoftLoadTimeout, background refreshes and
// write-backs used to outlive Close (20 loaders still ran after it).
func TestCloseCancelsAndWaitsForEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache[int, string](t, fs, &rt.Options[int, string]{
			TTL:                  time.Second,
			StaleWhileRevalidate: time.Hour,
			FailSafe:             rt.FailSafeOptions{MaxStale: time.Hour},
			SoftLoadTimeout:      10 * time.Millisecond,
		})
		var running atomic.Int32
		slow := func(ctx context.Context, k int) (string, error) {
			running.Add(1)
			defer running.Add(-1)
			select {
			case <-time.After(time.Hour):
				return fmt.Sprint(k), nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		quick := func(_ context.Context, k int) (string, error) { return fmt.Sprint(k), nil }
		for k := range 10 {
			_, err := c.GetOrLoad(context.Background(), k, quick)
			require.NoError(t, err)
		}
		synctest.Wait()
		time.Sleep(2 * time.Second) // every key is stale

		// Refreshes: stale-while-revalidate serves k and refreshes it.
		for k := range 5 {
			r, err := c.Fetch(context.Background(), k, slow)
			require.NoError(t, err)
			assert.Equal(t, rt.SourceStale, r.Source)
		}
		// Loads whose callers all left.
		for k := 100; k < 105; k++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			_, err := c.GetOrLoad(ctx, k, slow)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			cancel()
		}
		// A write-back that hangs (the store is slow to accept writes).
		fs.Inject(storetest.OpCompareAndSwap, storetest.Fault{Delay: time.Hour})
		_, err := c.GetOrLoad(context.Background(), 200, quick)
		require.NoError(t, err, "the caller does not wait for the write")
		synctest.Wait()
		assert.EqualValues(t, 10, running.Load(), "five refreshes and five abandoned loads are running")

		require.NoError(t, c.Close())
		assert.Zero(t, running.Load(), "nothing the cache started runs after Close")
		_, err = c.GetOrLoad(context.Background(), 1, quick)
		assert.ErrorIs(t, err, rt.ErrClosed)
		assert.ErrorIs(t, c.Set(context.Background(), 1, "x"), rt.ErrClosed)
		assert.ErrorIs(t, c.Delete(context.Background(), 1), rt.ErrClosed)
		_, _, err = c.Peek(context.Background(), 1)
		assert.ErrorIs(t, err, rt.ErrClosed)
		assert.NoError(t, c.Close(), "Close twice is fine")
	})
}

// TestWriteBackNeverHoldsTheCaller: on a store that blocks, the caller gets
// its value when the load returns; the write-back follows, bounded by
// StoreTimeout, and Close waits for it.
func TestWriteBackNeverHoldsTheCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		fs := storetest.NewFaultyStore(mem)
		fs.Inject(storetest.OpCompareAndSwap, storetest.Fault{Delay: 300 * time.Millisecond})
		c := newCache[string, string](t, fs, nil)
		start := time.Now()
		v, err := c.GetOrLoad(context.Background(), "k", echo)
		require.NoError(t, err)
		assert.Equal(t, "value of k", v)
		assert.Zero(t, time.Since(start), "no wait for the write")
		require.NoError(t, c.Close())
		assert.Equal(t, 300*time.Millisecond, time.Since(start), "Close waited for the write-back")
		assert.Equal(t, []string{"k"}, mem.Keys())
		r, err := newCache[string, string](t, mem, nil).Fetch(context.Background(), "k", nil2[string])
		require.NoError(t, err)
		assert.Equal(t, rt.SourceCache, r.Source, "and it landed")
	})
}

// echoAfterWrite is a store whose SetIfAbsent and GetOrSet apply, then
// report that they did not: what go-redis's SetNX returns when its first
// reply was lost and its retry found the key holding our own lease.
type echoAfterWrite struct{ rt.Store }

func (s echoAfterWrite) SetIfAbsent(ctx context.Context, k string, v []byte, ttl time.Duration) (bool, error) {
	_, err := s.Store.SetIfAbsent(ctx, k, v, ttl)
	return false, err
}

// TestLeaseWhoseReplyWasLostIsOurs: the flight used to wait on its own lock
// until Lock.MaxWait (5s), with no store error counted. A lease that holds
// our own token is ours.
func TestLeaseWhoseReplyWasLostIsOurs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[string, string](t, echoAfterWrite{storetest.Plain(memstore.New())}, nil)
		l := countLoads(echo)
		start := time.Now()
		r, err := c.Fetch(context.Background(), "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceLoader, r.Source)
		assert.Equal(t, 1, l.n())
		assert.Zero(t, time.Since(start), "no wait on our own lease")
		assert.Zero(t, c.Stats().LockWaits)
	})
}

// TestCutShortEntriesAreMisses: the raw string codec accepts any bytes, so
// an entry cut short (by a store, a proxy, a reply cut mid-way) used to be
// served as a hit, 20 bytes short. It is a miss; when the stored bytes
// themselves are cut, the next load repairs them.
func TestCutShortEntriesAreMisses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		fs := storetest.NewFaultyStore(mem)
		c := newCache[string, string](t, fs, &rt.Options[string, string]{Namespace: "n"})
		long := "a value long enough to lose twenty bytes off its end"
		l := countLoads(func(context.Context, string) (string, error) { return long, nil })
		_, err := c.GetOrLoad(context.Background(), "k", l.load)
		require.NoError(t, err)
		synctest.Wait()

		// Cut on the way: never served; the store's own bytes are whole.
		fs.Inject(storetest.OpGet, storetest.Fault{Truncate: 20, Times: 1})
		v, err := c.GetOrLoad(context.Background(), "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, long, v)
		assert.EqualValues(t, 1, c.Stats().DecodeErrors)

		// Cut in the store: a miss, reloaded, and the entry repaired.
		raw, _, _ := mem.Get(context.Background(), "n:k")
		require.NoError(t, mem.Set(context.Background(), "n:k", raw[:len(raw)-20], time.Hour))
		v, err = c.GetOrLoad(context.Background(), "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, long, v)
		assert.Equal(t, 2, l.n(), "reloaded")
		synctest.Wait()
		r, err := c.Fetch(context.Background(), "k", nil2[string])
		require.NoError(t, err)
		assert.Equal(t, rt.SourceCache, r.Source, "repaired")
		assert.Equal(t, long, r.Value)
	})
}
