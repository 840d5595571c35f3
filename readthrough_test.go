package readthrough_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
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

// counted wraps a loader and counts its calls.
type counted[K comparable, V any] struct {
	calls atomic.Int32
	fn    func(ctx context.Context, k K) (V, error)
}

func (c *counted[K, V]) load(ctx context.Context, k K) (V, error) {
	c.calls.Add(1)
	return c.fn(ctx, k)
}

func (c *counted[K, V]) n() int { return int(c.calls.Load()) }

func countLoads[K comparable, V any](fn func(ctx context.Context, k K) (V, error)) *counted[K, V] {
	return &counted[K, V]{fn: fn}
}

func newCache[K comparable, V any](t *testing.T, s rt.Store, o *rt.Options[K, V]) *rt.Cache[K, V] {
	t.Helper()
	c, err := rt.New(s, o)
	require.NoError(t, err)
	return c
}

func echo(_ context.Context, k string) (string, error) { return "value of " + k, nil }

// --- keys

type SKU string
type UserID int64
type Port uint16
type point struct{ X, Y int }

func TestKeyDerivation(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	str := newCache[string, int](t, s, &rt.Options[string, int]{Namespace: "product"})
	assert.Equal(t, "product:42", str.Key("42"))
	assert.Equal(t, "product:", str.Key(""))
	assert.Equal(t, "product:a:b", str.Key("a:b"))

	assert.Equal(t, "product:42", newCache[int, int](t, s, &rt.Options[int, int]{Namespace: "product"}).Key(42))
	assert.Equal(t, "-7", newCache[int8, int](t, s, nil).Key(-7))
	assert.Equal(t, "18446744073709551615", newCache[uint64, int](t, s, nil).Key(^uint64(0)))
	assert.Equal(t, "sku:AB-1", newCache[SKU, int](t, s, &rt.Options[SKU, int]{Namespace: "sku"}).Key("AB-1"))
	assert.Equal(t, "user:-9000000000", newCache[UserID, int](t, s, &rt.Options[UserID, int]{Namespace: "user"}).Key(-9000000000))
	assert.Equal(t, "8080", newCache[Port, int](t, s, nil).Key(8080))
	assert.Equal(t, "42", newCache[string, int](t, s, nil).Key("42"), "no namespace, no prefix")

	pt := newCache[point, int](t, s, &rt.Options[point, int]{
		Namespace: "pt",
		KeyFunc:   func(p point) string { return fmt.Sprintf("%d,%d", p.X, p.Y) },
	})
	assert.Equal(t, "pt:1,2", pt.Key(point{1, 2}))
}

func TestLongKeysAreHashedKeepingTheNamespace(t *testing.T) {
	t.Parallel()
	c := newCache[string, int](t, memstore.New(), &rt.Options[string, int]{Namespace: "doc"})
	exact := strings.Repeat("a", rt.MaxKeyLen)
	assert.Equal(t, "doc:"+exact, c.Key(exact), "a key of exactly MaxKeyLen is kept")

	long1, long2 := exact+"1", exact+"2"
	k1, k2 := c.Key(long1), c.Key(long2)
	assert.True(t, strings.HasPrefix(k1, "doc:sha256:"), "got %q", k1)
	assert.Len(t, k1, len("doc:sha256:")+64)
	assert.NotEqual(t, k1, k2)
	assert.Equal(t, k1, c.Key(long1), "hashing is deterministic")
}

func TestNewRejectsKeyTypesWithoutADefault(t *testing.T) {
	t.Parallel()
	_, err := rt.New[point, int](memstore.New(), nil)
	require.ErrorIs(t, err, rt.ErrInvalidOptions)
	assert.Contains(t, err.Error(), "KeyFunc")
	_, err = rt.New[float64, int](memstore.New(), nil)
	require.ErrorIs(t, err, rt.ErrInvalidOptions)
}

func TestLockKeysNeverCollideWithValueKeys(t *testing.T) {
	synctest.Test(t, testLockKeysNeverCollide)
}

func testLockKeysNeverCollide(t *testing.T) {
	s := memstore.New()
	c := newCache[string, string](t, s, nil) // no namespace: user keys are the whole key
	// Keys shaped like lock keys of other designs, and like ours.
	keys := []string{"x", "x:lock", "lock:x", "\x00lock:x", "\x00", ""}
	release := make(chan struct{})
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() {
			v, err := c.GetOrLoad(context.Background(), k, func(ctx context.Context, k string) (string, error) {
				<-release // hold every lock at once
				return "v=" + k, nil
			})
			assert.NoError(t, err)
			assert.Equal(t, "v="+k, v)
		})
	}
	synctest.Wait()
	close(release)
	wg.Wait()
	assert.EqualValues(t, len(keys), c.Stats().Loads, "each key loads once; no key found another's lock")
	// Every value survived the release of every lock, and no lock is left.
	assert.Len(t, s.Keys(), len(keys))
	for _, k := range keys {
		r, err := c.Fetch(context.Background(), k, echo)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceCache, r.Source, "key %q", k)
		assert.Equal(t, "v="+k, r.Value)
	}
}

// --- TTL and negative caching

func TestTTLIsExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		c := newCache[string, string](t, s, &rt.Options[string, string]{TTL: 10 * time.Second})
		l := countLoads(echo)
		ctx := context.Background()

		r, err := c.Fetch(ctx, "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceLoader, r.Source)
		assert.Equal(t, time.Now().Add(10*time.Second), r.Expires)

		time.Sleep(10*time.Second - time.Nanosecond)
		r, err = c.Fetch(ctx, "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceCache, r.Source)
		assert.Equal(t, 10*time.Second-time.Nanosecond, r.Age)
		assert.Equal(t, 1, l.n())

		time.Sleep(time.Nanosecond)
		r, err = c.Fetch(ctx, "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceLoader, r.Source, "expired at exactly TTL")
		assert.Equal(t, 2, l.n())
	})
}

func TestTTLJitterSpreadsExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[int, int](t, memstore.New(), &rt.Options[int, int]{TTL: time.Minute, TTLJitter: 10 * time.Second})
		start := time.Now()
		seen := map[time.Duration]bool{}
		for i := range 50 {
			r, err := c.Fetch(context.Background(), i, func(context.Context, int) (int, error) { return i, nil })
			require.NoError(t, err)
			ttl := r.Expires.Sub(start)
			assert.GreaterOrEqual(t, ttl, time.Minute)
			assert.Less(t, ttl, time.Minute+10*time.Second)
			seen[ttl] = true
		}
		assert.Greater(t, len(seen), 40, "jittered TTLs should differ")
	})
}

func TestNegativeCaching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[int, string](t, memstore.New(), &rt.Options[int, string]{NegativeTTL: 30 * time.Second})
		l := countLoads(func(context.Context, int) (string, error) {
			return "", fmt.Errorf("product 7: %w", rt.ErrNotFound)
		})
		ctx := context.Background()

		r, first := c.Fetch(ctx, 7, l.load)
		require.ErrorIs(t, first, rt.ErrNotFound)
		assert.Equal(t, rt.SourceLoader, r.Source)

		for range 5 {
			r, err := c.Fetch(ctx, 7, l.load)
			require.ErrorIs(t, err, rt.ErrNotFound)
			assert.Equal(t, first, err, "one shape for every not-found, loaded or cached")
			assert.Equal(t, rt.SourceCache, r.Source)
		}
		assert.Equal(t, 1, l.n())
		st := c.Stats()
		assert.EqualValues(t, 5, st.NegativeHits)
		assert.Zero(t, st.LoadErrors, "not-found is not a load error")

		time.Sleep(30 * time.Second)
		_, err := c.Fetch(ctx, 7, l.load)
		require.ErrorIs(t, err, rt.ErrNotFound)
		assert.Equal(t, 2, l.n(), "loaded again once NegativeTTL passed")
	})
}

func TestNotFoundUncachedWithoutNegativeTTL(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	c := newCache[int, string](t, s, nil)
	l := countLoads(func(context.Context, int) (string, error) { return "", rt.ErrNotFound })
	for range 3 {
		_, err := c.GetOrLoad(t.Context(), 7, l.load)
		require.ErrorIs(t, err, rt.ErrNotFound)
	}
	assert.Equal(t, 3, l.n())
	assert.Zero(t, s.Len(), "nothing written, lock released")
}

func TestIsNotFoundMapsForeignErrors(t *testing.T) {
	t.Parallel()
	c := newCache[int, string](t, memstore.New(), &rt.Options[int, string]{
		NegativeTTL: time.Minute,
		IsNotFound:  func(err error) bool { return errors.Is(err, sql.ErrNoRows) },
	})
	l := countLoads(func(context.Context, int) (string, error) { return "", fmt.Errorf("select: %w", sql.ErrNoRows) })

	_, err := c.GetOrLoad(t.Context(), 1, l.load)
	assert.ErrorIs(t, err, rt.ErrNotFound)
	_, err = c.GetOrLoad(t.Context(), 1, l.load)
	assert.ErrorIs(t, err, rt.ErrNotFound)
	assert.Equal(t, 1, l.n())
}

// TestNotFoundHasOneShape: a handler that maps sql.ErrNoRows to 404 must
// see it on every path: the load, the cached not-found in this process,
// and another process's cached not-found. (It used to get sql.ErrNoRows
// on the load and only ErrNotFound after: a 404, then a 502.)
func TestNotFoundHasOneShape(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	opts := &rt.Options[int, string]{
		NegativeTTL:   time.Minute,
		IsNotFound:    func(err error) bool { return errors.Is(err, sql.ErrNoRows) },
		NotFoundError: sql.ErrNoRows,
	}
	a, b := newCache(t, s, opts), newCache(t, s, opts)
	l := countLoads(func(context.Context, int) (string, error) { return "", fmt.Errorf("select: %w", sql.ErrNoRows) })
	_, loaded := a.GetOrLoad(t.Context(), 1, l.load)
	_, cached := a.GetOrLoad(t.Context(), 1, l.load)
	_, other := b.GetOrLoad(t.Context(), 1, l.load)
	for name, err := range map[string]error{"loaded": loaded, "cached": cached, "another process": other} {
		assert.ErrorIs(t, err, sql.ErrNoRows, name)
		assert.ErrorIs(t, err, rt.ErrNotFound, name)
		assert.Equal(t, loaded.Error(), err.Error(), name)
	}
	assert.Equal(t, 1, l.n())

	// Without NotFoundError every path gives exactly ErrNotFound.
	plain := newCache[int, string](t, memstore.New(), &rt.Options[int, string]{NegativeTTL: time.Minute})
	missing := func(context.Context, int) (string, error) { return "", fmt.Errorf("row 1: %w", rt.ErrNotFound) }
	_, loaded = plain.GetOrLoad(t.Context(), 1, missing)
	_, cached = plain.GetOrLoad(t.Context(), 1, missing)
	assert.Same(t, rt.ErrNotFound, loaded)
	assert.Same(t, rt.ErrNotFound, cached)
}

func TestLoaderErrorsAreSharedNotCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		c := newCache[string, string](t, s, &rt.Options[string, string]{NegativeTTL: time.Minute})
		boom := errors.New("upstream 503")
		release := make(chan struct{})
		l := countLoads(func(context.Context, string) (string, error) { <-release; return "", boom })

		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				_, err := c.GetOrLoad(context.Background(), "k", l.load)
				assert.ErrorIs(t, err, boom)
			})
		}
		synctest.Wait()
		close(release)
		wg.Wait()
		assert.Equal(t, 1, l.n())
		assert.Empty(t, s.Keys(), "an error is not cached, and the lock is released at once")
		assert.EqualValues(t, 1, c.Stats().LoadErrors)

		ok := countLoads(echo)
		v, err := c.GetOrLoad(context.Background(), "k", ok.load)
		require.NoError(t, err)
		assert.Equal(t, "value of k", v)
		assert.Zero(t, c.Stats().LockWaits, "no wait for a stale lock")
	})
}

// --- single flight and the distributed lock

func TestSingleFlightInProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[string, string](t, memstore.New(), nil)
		release := make(chan struct{})
		l := countLoads(func(ctx context.Context, k string) (string, error) { <-release; return echo(ctx, k) })

		const n = 100
		sources := make(chan rt.Source, n)
		for range n {
			go func() {
				r, err := c.Fetch(context.Background(), "hot", l.load)
				assert.NoError(t, err)
				assert.Equal(t, "value of hot", r.Value)
				sources <- r.Source
			}()
		}
		synctest.Wait() // all n callers are waiting on the one load
		close(release)
		count := map[rt.Source]int{}
		for range n {
			count[<-sources]++
		}
		assert.Equal(t, 1, l.n())
		assert.Equal(t, map[rt.Source]int{rt.SourceLoader: 1, rt.SourceShared: n - 1}, count)
		st := c.Stats()
		assert.EqualValues(t, n-1, st.Shared)
		assert.EqualValues(t, n, st.Misses)
	})
}

func TestDistributedLockOneLoadAcrossProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		const procs, goroutines = 8, 16
		var loads atomic.Int32
		load := func(ctx context.Context, k string) (string, error) {
			loads.Add(1)
			time.Sleep(200 * time.Millisecond) // a slow upstream
			return "v:" + k, nil
		}
		caches := make([]*rt.Cache[string, string], procs)
		for i := range caches {
			caches[i] = newCache[string, string](t, s, &rt.Options[string, string]{Namespace: "p"})
		}
		for round := range 5 { // five fresh keys in a row
			key := fmt.Sprintf("cold-%d", round)
			sources := make(chan rt.Source, procs*goroutines)
			var wg sync.WaitGroup
			for _, c := range caches {
				for range goroutines {
					wg.Go(func() {
						r, err := c.Fetch(context.Background(), key, load)
						assert.NoError(t, err)
						assert.Equal(t, "v:"+key, r.Value)
						sources <- r.Source
					})
				}
			}
			wg.Wait()
			close(sources)
			count := map[rt.Source]int{}
			for src := range sources {
				count[src]++
			}
			assert.EqualValues(t, round+1, loads.Load(), "one load per key across %d processes", procs)
			assert.Equal(t, 1, count[rt.SourceLoader])
			assert.Equal(t, procs-1, count[rt.SourceLockWait])
			assert.Equal(t, procs*(goroutines-1), count[rt.SourceShared])
		}
		assert.Len(t, s.Keys(), 5, "five values, no lock left behind")
	})
}

func TestLockDisabledLoadsOncePerProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		var loads atomic.Int32
		load := func(ctx context.Context, k string) (string, error) {
			loads.Add(1)
			time.Sleep(200 * time.Millisecond)
			return k, nil
		}
		var wg sync.WaitGroup
		for range 4 {
			c := newCache[string, string](t, s, &rt.Options[string, string]{Lock: rt.LockOptions{Disabled: true}})
			for range 8 {
				wg.Go(func() { _, _ = c.GetOrLoad(context.Background(), "k", load) })
			}
		}
		wg.Wait()
		assert.EqualValues(t, 4, loads.Load(), "single-flight only: one load per process")
	})
}

// hookStore runs a hook before each SetIfAbsent, to act between a miss and
// the lock.
type hookStore struct {
	rt.Store
	beforeLock func()
}

func (h *hookStore) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if h.beforeLock != nil {
		h.beforeLock()
	}
	return h.Store.SetIfAbsent(ctx, key, value, ttl)
}

func TestWinnerRechecksAfterTakingTheLock(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	other := newCache[string, string](t, s, nil) // another process
	hs := &hookStore{Store: s}
	c := newCache[string, string](t, hs, nil)
	hs.beforeLock = func() {
		// The other process finishes its load after our miss, before our lock.
		require.NoError(t, other.Set(context.Background(), "k", "from the other process"))
	}
	l := countLoads(echo)
	r, err := c.Fetch(t.Context(), "k", l.load)
	require.NoError(t, err)
	assert.Equal(t, "from the other process", r.Value)
	assert.Equal(t, rt.SourceCache, r.Source)
	assert.Zero(t, l.n(), "a value written just before the lock is not loaded again")
	assert.Equal(t, []string{"k"}, s.Keys(), "lock released")
}

func TestWaiterTakesTheLockWhenItsHolderFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		a := newCache[string, string](t, s, nil)
		b := newCache[string, string](t, s, nil)
		fail := make(chan struct{})
		go func() {
			_, err := a.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
				<-fail
				return "", errors.New("upstream down")
			})
			assert.Error(t, err)
		}()
		synctest.Wait() // a holds the lock
		done := make(chan rt.Result[string])
		lb := countLoads(echo)
		go func() {
			r, err := b.Fetch(context.Background(), "k", lb.load)
			assert.NoError(t, err)
			done <- r
		}()
		time.Sleep(100 * time.Millisecond) // b is polling
		close(fail)                        // a releases its lock with no value
		r := <-done
		assert.Equal(t, rt.SourceLoader, r.Source, "b took the freed lock and loaded")
		assert.Equal(t, 1, lb.n())
		assert.EqualValues(t, 1, b.Stats().LockWaits)
		assert.Zero(t, b.Stats().LockTimeouts)
	})
}

func TestDeadHolderDelaysAtMostMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		lockOpts := rt.LockOptions{TTL: time.Minute, MaxWait: 2 * time.Second}
		a := newCache[string, string](t, s, &rt.Options[string, string]{Lock: lockOpts})
		b := newCache[string, string](t, s, &rt.Options[string, string]{Lock: lockOpts})
		hang := make(chan struct{})
		defer close(hang)
		go func() { // a takes the lock and never finishes: a hung or dead holder
			_, _ = a.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
				<-hang
				return "", errors.New("never")
			})
		}()
		synctest.Wait()

		start := time.Now()
		lb := countLoads(echo)
		r, err := b.Fetch(context.Background(), "k", lb.load)
		require.NoError(t, err)
		waited := time.Since(start)
		assert.Equal(t, rt.SourceLoader, r.Source)
		assert.Equal(t, 1, lb.n())
		assert.GreaterOrEqual(t, waited, 2*time.Second)
		assert.LessOrEqual(t, waited, 2*time.Second+rt.DefaultMaxPollInterval*6/5)
		assert.EqualValues(t, 1, b.Stats().LockTimeouts)
	})
}

func TestExpiredLockOfACrashedHolderIsRetaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		fs := storetest.NewFaultyStore(mem)
		lockOpts := rt.LockOptions{TTL: time.Second, MaxWait: time.Minute}
		a := newCache[string, string](t, fs, &rt.Options[string, string]{Lock: lockOpts, LoadTimeout: time.Minute})
		b := newCache[string, string](t, mem, &rt.Options[string, string]{Lock: lockOpts, LoadTimeout: time.Minute})
		// a "crashes": its load fails and it cannot release its lock.
		fs.Inject(storetest.OpCompareAndDelete, storetest.Fault{})
		fs.Inject(storetest.OpDelete, storetest.Fault{})
		_, err := a.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
			return "", errors.New("crash")
		})
		require.Error(t, err)
		synctest.Wait() // the release runs after the callers have their answer
		assert.EqualValues(t, 1, a.Stats().StoreErrors, "the failed release is counted")

		start := time.Now()
		r, err := b.Fetch(context.Background(), "k", echo)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceLoader, r.Source)
		assert.GreaterOrEqual(t, time.Since(start), time.Second-time.Nanosecond)
		// The lease expires silently in memstore: the waiter's safety-net
		// poll (TTL/10) finds it gone.
		assert.LessOrEqual(t, time.Since(start), time.Second+time.Second/10+rt.DefaultMaxPollInterval, "retaken once the lease's TTL ended")
		assert.Zero(t, b.Stats().LockTimeouts)
	})
}

// cadOnly is a store with a conditional delete but no compare-and-swap: no
// lease keep-alive.
type cadOnly struct {
	rt.Store
	cad store.CompareAndDeleter
}

func (c cadOnly) CompareAndDelete(ctx context.Context, k string, v []byte) (bool, error) {
	return c.cad.CompareAndDelete(ctx, k, v)
}

// TestReleaseIsOwnerSafe: a holder whose lease expired during its load
// (no keep-alive without compare-and-swap) and was taken by another flight
// never releases that other flight's lease.
func TestReleaseIsOwnerSafe(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(*memstore.Store) rt.Store
	}{
		{"CompareAndDelete", func(m *memstore.Store) rt.Store { return cadOnly{storetest.Plain(m), m} }},
		{"CheckThenDelete", func(m *memstore.Store) rt.Store { return storetest.Plain(m) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := tc.wrap(memstore.New())
				o := &rt.Options[string, string]{Lock: rt.LockOptions{TTL: 2 * time.Second}}
				a, b, c := newCache(t, s, o), newCache(t, s, o), newCache(t, s, o)
				var loads atomic.Int32
				loader := func(d time.Duration, result error) rt.Loader[string, string] {
					return func(context.Context, string) (string, error) {
						loads.Add(1)
						time.Sleep(d)
						return "v", result
					}
				}
				var wg sync.WaitGroup
				// t=0: a leases; its 3s load outlives the 2s lease, then fails (nothing cached).
				wg.Go(func() {
					_, _ = a.GetOrLoad(context.Background(), "k", loader(3*time.Second, errors.New("late failure")))
				})
				time.Sleep(500 * time.Millisecond)
				// t=0.5: b waits; at t=2 a's lease expires and b takes it, loading until t=3.5.
				wg.Go(func() { _, _ = b.GetOrLoad(context.Background(), "k", loader(1500*time.Millisecond, nil)) })
				// t=3: a fails and releases. It must not free b's lease.
				time.Sleep(2600 * time.Millisecond)
				r, err := c.Fetch(context.Background(), "k", loader(1500*time.Millisecond, nil))
				require.NoError(t, err)
				wg.Wait()
				assert.Equal(t, rt.SourceLockWait, r.Source, "c waited on b's lease")
				assert.EqualValues(t, 2, loads.Load())
			})
		})
	}
}

// --- context

func TestCallerLeavesOnItsOwnContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[string, string](t, memstore.New(), nil)
		var loaderCtx context.Context
		var errAfterLoad error
		l := countLoads(func(ctx context.Context, k string) (string, error) {
			loaderCtx = ctx
			time.Sleep(time.Second)
			errAfterLoad = ctx.Err()
			return echo(ctx, k)
		})
		type ctxKey struct{}
		impatient, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace-1"))
		start := time.Now()
		leftErr := make(chan error)
		go func() {
			_, err := c.GetOrLoad(impatient, "k", l.load) // the leader
			leftErr <- err
		}()
		synctest.Wait() // the load has started, with impatient's context
		patient := make(chan rt.Result[string])
		go func() {
			r, err := c.Fetch(context.Background(), "k", l.load)
			assert.NoError(t, err)
			patient <- r
		}()
		time.Sleep(100 * time.Millisecond)
		cancel()
		assert.ErrorIs(t, <-leftErr, context.Canceled)
		assert.Equal(t, 100*time.Millisecond, time.Since(start), "the caller left at once")

		r := <-patient
		assert.Equal(t, "value of k", r.Value, "the others still get the value")
		assert.NoError(t, errAfterLoad, "the load was not cancelled with its first caller")
		assert.Equal(t, "trace-1", loaderCtx.Value(ctxKey{}), "the load keeps the caller's values")

		r, err := c.Fetch(context.Background(), "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceCache, r.Source, "and it was cached")
		assert.Equal(t, 1, l.n())
	})
}

func TestAbandonedLoadStillCaches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		c := newCache[string, string](t, s, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		_, err := c.GetOrLoad(ctx, "k", func(ctx context.Context, k string) (string, error) {
			time.Sleep(time.Second)
			return "late", nil
		})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		synctest.Wait() // the load goroutine ends on its own; the bubble would not end otherwise
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, []string{"k"}, s.Keys())
	})
}

func TestLoadTimeoutBoundsTheSharedLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		c := newCache[string, string](t, s, &rt.Options[string, string]{LoadTimeout: 3 * time.Second})
		start := time.Now()
		_, err := c.GetOrLoad(context.Background(), "k", func(ctx context.Context, k string) (string, error) {
			<-ctx.Done() // an upstream that never answers
			return "", ctx.Err()
		})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 3*time.Second, time.Since(start))
		synctest.Wait()
		assert.Empty(t, s.Keys(), "nothing cached, lease released")
	})
}

func TestDoneContextBeforeTheCall(t *testing.T) {
	t.Parallel()
	c := newCache[string, string](t, memstore.New(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	l := countLoads(echo)
	_, err := c.GetOrLoad(ctx, "k", l.load)
	require.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, l.n())
	assert.Zero(t, c.Stats().StoreErrors, "the caller leaving is not a store failure")
}

// --- panics

func TestLoaderPanicReachesEveryWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		c := newCache[string, string](t, s, nil)
		type boom struct{ msg string }
		value := &boom{"loader exploded"}
		release := make(chan struct{})
		const n = 10
		recovered := make(chan any, n)
		for range n {
			go func() {
				defer func() { recovered <- recover() }()
				_, _ = c.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
					<-release
					panic(value)
				})
			}()
		}
		synctest.Wait()
		close(release)
		for range n {
			assert.Same(t, value, <-recovered, "each caller re-panics with the original value")
		}
		assert.Empty(t, s.Keys(), "lock released")

		start := time.Now()
		v, err := c.GetOrLoad(context.Background(), "k", echo)
		require.NoError(t, err)
		assert.Equal(t, "value of k", v)
		assert.Zero(t, time.Since(start), "the key is usable at once")
		assert.EqualValues(t, 1, c.Stats().LoadErrors)
	})
}

// --- store failures

func TestStoreFailuresFailOpen(t *testing.T) {
	for _, op := range []storetest.Op{storetest.OpGet, storetest.OpSetIfAbsent, storetest.OpCompareAndSwap, ""} {
		name := string(op)
		if op == "" {
			name = "All"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := storetest.NewFaultyStore(memstore.New())
				if op == "" {
					fs.InjectAll(storetest.Fault{})
				} else {
					fs.Inject(op, storetest.Fault{})
				}
				c := newCache[string, string](t, fs, nil)
				l := countLoads(echo)
				v, err := c.GetOrLoad(context.Background(), "k", l.load)
				require.NoError(t, err, "the caller never sees a store error")
				assert.Equal(t, "value of k", v)
				assert.Equal(t, 1, l.n())
				synctest.Wait() // a failed write-back runs after the caller has its value
				assert.EqualValues(t, 1, c.Stats().StoreErrors)
			})
		})
	}
}

// TestHangingStoreCostsOneStoreTimeout: a store that hangs, whether it
// honours ctx or ignores it as go-redis's default client does, costs a
// request one StoreTimeout, then the loader answers and the request
// touches the store no more. (It used to cost Get + lock + Set, three.)
func TestHangingStoreCostsOneStoreTimeout(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprintf("IgnoreContext=%v", ignore), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := storetest.NewFaultyStore(memstore.New())
				fs.InjectAll(storetest.Fault{Delay: time.Hour, IgnoreContext: ignore})
				c := newCache[string, string](t, fs, &rt.Options[string, string]{StoreTimeout: 50 * time.Millisecond})
				start := time.Now()
				v, err := c.GetOrLoad(context.Background(), "k", echo)
				require.NoError(t, err)
				assert.Equal(t, "value of k", v)
				assert.Equal(t, 50*time.Millisecond, time.Since(start))
				assert.EqualValues(t, 1, c.Stats().StoreErrors)
				assert.Equal(t, 1, fs.TotalCalls()-fs.Calls(storetest.OpNotify), "one store call, then none")
				fs.Heal()
				_ = c.Close() // waits for the abandoned call to give up on its own
			})
		})
	}
}

func TestStoreRecoversAfterOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache[string, string](t, fs, nil)
		l := countLoads(echo)
		fs.InjectAll(storetest.Fault{})
		for range 3 {
			_, err := c.GetOrLoad(context.Background(), "k", l.load)
			require.NoError(t, err)
		}
		assert.Equal(t, 3, l.n(), "while the store is down every call loads")
		fs.Heal()
		for range 3 {
			_, err := c.GetOrLoad(context.Background(), "k", l.load)
			require.NoError(t, err)
			synctest.Wait() // the write-back lands
		}
		assert.Equal(t, 4, l.n(), "once it is back, one load and then hits")
		assert.EqualValues(t, 2, c.Stats().Hits)
	})
}

// --- corrupt and foreign entries

func TestCorruptEntriesAreMisses(t *testing.T) {
	t.Parallel()
	for name, raw := range map[string][]byte{
		"empty":         {},
		"foreign JSON":  []byte(`{"name":"widget"}`),
		"foreign text":  []byte("hello"),
		"short header":  {0xD7, 1, 1},
		"wrong version": append([]byte{0xD7, 99, 1, 0}, make([]byte, 40)...),
	} {
		t.Run(name, func(t *testing.T) {
			s := memstore.New()
			c := newCache[string, string](t, s, &rt.Options[string, string]{Namespace: "n"})
			require.NoError(t, s.Set(t.Context(), "n:k", raw, time.Minute))
			l := countLoads(echo)
			r, err := c.Fetch(t.Context(), "k", l.load)
			require.NoError(t, err)
			assert.Equal(t, rt.SourceLoader, r.Source)
			assert.Equal(t, "value of k", r.Value)
			r, err = c.Fetch(t.Context(), "k", l.load)
			require.NoError(t, err)
			assert.Equal(t, rt.SourceCache, r.Source, "the load overwrote the bad entry")
			assert.Equal(t, 1, l.n())
		})
	}
}

func TestEntriesOfAnotherValueTypeAreMisses(t *testing.T) {
	t.Parallel()
	type user struct{ Name string }
	type product struct{ Name string } // same JSON shape, another type
	s := memstore.New()
	users := newCache[int, user](t, s, &rt.Options[int, user]{Namespace: "shared"})
	products := newCache[int, product](t, s, &rt.Options[int, product]{Namespace: "shared"})
	require.NoError(t, users.Set(t.Context(), 1, user{"ada"}))

	l := countLoads(func(context.Context, int) (product, error) { return product{"widget"}, nil })
	p, err := products.GetOrLoad(t.Context(), 1, l.load)
	require.NoError(t, err)
	assert.Equal(t, product{"widget"}, p, "never a user decoded as a product")
	assert.Equal(t, 1, l.n())
	assert.GreaterOrEqual(t, products.Stats().DecodeErrors, uint64(1))
}

func TestUndecodablePayloadIsAMiss(t *testing.T) {
	t.Parallel()
	type doc struct{ N int }
	s := memstore.New()
	// The same value type, a codec that wrote something JSON cannot read.
	bad := newCache[string, doc](t, s, &rt.Options[string, doc]{Codec: gibberish[doc]{}})
	require.NoError(t, bad.Set(t.Context(), "k", doc{1}))
	c := newCache[string, doc](t, s, nil)
	l := countLoads(func(context.Context, string) (doc, error) { return doc{2}, nil })
	v, err := c.GetOrLoad(t.Context(), "k", l.load)
	require.NoError(t, err)
	assert.Equal(t, doc{2}, v)
	assert.Equal(t, 1, l.n())
}

type gibberish[V any] struct{}

func (gibberish[V]) Marshal(V) ([]byte, error) { return []byte("}{not json"), nil }
func (gibberish[V]) Unmarshal([]byte) (V, error) {
	var v V
	return v, errors.New("unreachable")
}

// --- codecs

func TestDefaultCodecs(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	ctx := t.Context()

	str := newCache[string, string](t, s, &rt.Options[string, string]{Namespace: "s"})
	require.NoError(t, str.Set(ctx, "k", `he said "hi"`))
	raw, _, _ := s.Get(ctx, "s:k")
	assert.True(t, strings.HasSuffix(string(raw), `he said "hi"`), "strings are stored raw, not JSON-quoted: %q", raw)

	bin := newCache[string, []byte](t, s, &rt.Options[string, []byte]{Namespace: "b"})
	require.NoError(t, bin.Set(ctx, "k", []byte{0, 1, 2, 0xff}))
	raw, _, _ = s.Get(ctx, "b:k")
	assert.Equal(t, []byte{0, 1, 2, 0xff}, raw[len(raw)-4:], "bytes are stored raw, not base64")
	got, err := bin.GetOrLoad(ctx, "k", nil2[[]byte])
	require.NoError(t, err)
	assert.Equal(t, []byte{0, 1, 2, 0xff}, got)

	type product struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	js := newCache[int, product](t, s, &rt.Options[int, product]{Namespace: "j"})
	require.NoError(t, js.Set(ctx, 1, product{1, "widget"}))
	raw, _, _ = s.Get(ctx, "j:1")
	assert.True(t, strings.HasSuffix(string(raw), `{"id":1,"name":"widget"}`), "structs are JSON: %q", raw)
}

// nil2 is a loader for tests that must hit.
func nil2[V any](context.Context, string) (V, error) {
	var v V
	return v, errors.New("loader called on what should be a hit")
}

// upper is a user codec: it stores strings upper-cased and reads them back lower-cased.
type upper struct{ calls *atomic.Int32 }

func (u upper) Marshal(v string) ([]byte, error) {
	u.calls.Add(1)
	return []byte(strings.ToUpper(v)), nil
}
func (u upper) Unmarshal(b []byte) (string, error) {
	u.calls.Add(1)
	return strings.ToLower(string(b)), nil
}

func TestUserCodec(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	var calls atomic.Int32
	c := newCache[string, string](t, s, &rt.Options[string, string]{Codec: upper{&calls}})
	_, err := c.GetOrLoad(t.Context(), "k", func(context.Context, string) (string, error) { return "Hello", nil })
	require.NoError(t, err)
	raw, _, _ := s.Get(t.Context(), "k")
	assert.True(t, strings.HasSuffix(string(raw), "HELLO"))
	v, err := c.GetOrLoad(t.Context(), "k", nil2[string])
	require.NoError(t, err)
	assert.Equal(t, "hello", v)
	assert.EqualValues(t, 2, calls.Load())
}

type failingCodec struct{}

func (failingCodec) Marshal(string) ([]byte, error)   { return nil, errors.New("cannot encode") }
func (failingCodec) Unmarshal([]byte) (string, error) { return "", errors.New("cannot decode") }

func TestEncodeFailureStillServesTheValue(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	c := newCache[string, string](t, s, &rt.Options[string, string]{Codec: failingCodec{}})
	v, err := c.GetOrLoad(t.Context(), "k", echo)
	require.NoError(t, err)
	assert.Equal(t, "value of k", v)
	assert.EqualValues(t, 1, c.Stats().EncodeErrors)
	assert.Empty(t, s.Keys())
	assert.Error(t, c.Set(t.Context(), "k", "v"), "an explicit Set reports the codec's error")
}

// --- Set, Delete, stats, options

func TestSetAndDelete(t *testing.T) {
	t.Parallel()
	c := newCache[string, string](t, memstore.New(), nil)
	ctx := t.Context()
	require.NoError(t, c.Set(ctx, "k", "written"))
	v, err := c.GetOrLoad(ctx, "k", nil2[string])
	require.NoError(t, err)
	assert.Equal(t, "written", v)

	require.NoError(t, c.Delete(ctx, "k"))
	require.NoError(t, c.Delete(ctx, "k"), "idempotent")
	l := countLoads(echo)
	v, err = c.GetOrLoad(ctx, "k", l.load)
	require.NoError(t, err)
	assert.Equal(t, "value of k", v)
	assert.Equal(t, 1, l.n())
}

func TestSetAndDeleteReportStoreErrors(t *testing.T) {
	t.Parallel()
	fs := storetest.NewFaultyStore(memstore.New())
	fs.InjectAll(storetest.Fault{})
	c := newCache[string, string](t, fs, nil)
	assert.ErrorIs(t, c.Set(t.Context(), "k", "v"), storetest.ErrInjected)
	assert.ErrorIs(t, c.Delete(t.Context(), "k"), storetest.ErrInjected)
	assert.EqualValues(t, 2, c.Stats().StoreErrors)
}

func TestNilLoader(t *testing.T) {
	t.Parallel()
	c := newCache[string, string](t, memstore.New(), nil)
	_, err := c.GetOrLoad(t.Context(), "k", nil)
	assert.Error(t, err)
}

func TestStatsCountEachPath(t *testing.T) {
	t.Parallel()
	c := newCache[int, string](t, memstore.New(), &rt.Options[int, string]{NegativeTTL: time.Minute})
	ctx := t.Context()
	load := func(_ context.Context, k int) (string, error) {
		switch k {
		case 0:
			return "", rt.ErrNotFound
		case 1:
			return "", errors.New("boom")
		}
		return "ok", nil
	}
	for _, k := range []int{2, 2, 2, 0, 0, 1} {
		_, _ = c.GetOrLoad(ctx, k, load)
	}
	assert.Equal(t, rt.Stats{Hits: 2, NegativeHits: 1, Misses: 3, Loads: 3, LoadErrors: 1}, c.Stats())
}

type limited struct {
	rt.Store
	l store.Limits
}

func (l limited) Limits() store.Limits { return l.l }

func TestNewValidates(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	cases := []struct {
		name  string
		store rt.Store
		opts  *rt.Options[string, int]
		want  string
	}{
		{"nil store", nil, nil, "nil store"},
		{"negative TTL", s, &rt.Options[string, int]{TTL: -1}, "TTL is negative"},
		{"negative NegativeTTL", s, &rt.Options[string, int]{NegativeTTL: -time.Second}, "NegativeTTL is negative"},
		{"negative TTLJitter", s, &rt.Options[string, int]{TTLJitter: -1}, "TTLJitter"},
		{"negative StoreTimeout", s, &rt.Options[string, int]{StoreTimeout: -1}, "StoreTimeout"},
		{"negative LoadTimeout", s, &rt.Options[string, int]{LoadTimeout: -1}, "LoadTimeout"},
		{"negative Lock.TTL", s, &rt.Options[string, int]{Lock: rt.LockOptions{TTL: -1}}, "Lock.TTL"},
		{"negative Lock.MaxWait", s, &rt.Options[string, int]{Lock: rt.LockOptions{MaxWait: -1}}, "Lock.MaxWait"},
		{"negative Lock.PollInterval", s, &rt.Options[string, int]{Lock: rt.LockOptions{PollInterval: -1}}, "Lock.PollInterval"},
		{"poll above cap", s, &rt.Options[string, int]{Lock: rt.LockOptions{PollInterval: time.Second, MaxPollInterval: time.Millisecond}}, "above Lock.MaxPollInterval"},
		{"NUL in namespace", s, &rt.Options[string, int]{Namespace: "a\x00b"}, "NUL"},
		{"TTL above store max", limited{s, store.Limits{MaxTTL: time.Hour}}, &rt.Options[string, int]{TTL: 2 * time.Hour}, "TTL+TTLJitter"},
		{"jitter above store max", limited{s, store.Limits{MaxTTL: time.Hour}}, &rt.Options[string, int]{TTL: time.Hour, TTLJitter: time.Second}, "TTL+TTLJitter"},
		{"NegativeTTL above store max", limited{s, store.Limits{MaxTTL: time.Hour}}, &rt.Options[string, int]{NegativeTTL: 2 * time.Hour}, "NegativeTTL"},
		{"default TTL above store max", limited{s, store.Limits{MaxTTL: time.Minute}}, nil, "TTL+TTLJitter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := rt.New(tc.store, tc.opts)
			require.ErrorIs(t, err, rt.ErrInvalidOptions)
			assert.Contains(t, err.Error(), tc.want)
			assert.Nil(t, c)
		})
	}
	for _, opts := range []*rt.Options[string, int]{nil, {}, {TTL: time.Second, Lock: rt.LockOptions{PollInterval: time.Second}}} {
		_, err := rt.New(s, opts)
		assert.NoError(t, err, "opts %+v", opts)
	}
}

func TestOversizeEntriesAreNotCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		c := newCache[string, string](t, limited{s, store.Limits{MaxEntrySize: 100}}, nil)
		l := countLoads(func(context.Context, string) (string, error) { return strings.Repeat("x", 200), nil })
		for range 2 {
			v, err := c.GetOrLoad(context.Background(), "k", l.load)
			require.NoError(t, err)
			assert.Len(t, v, 200, "the caller still gets its value")
			synctest.Wait() // the write-back, refused, and the lease's release
		}
		assert.Equal(t, 2, l.n())
		assert.EqualValues(t, 2, c.Stats().Oversize)
		assert.Zero(t, c.Stats().StoreErrors, "too large is not a store failure")
		assert.Empty(t, s.Keys())
	})
}

func TestTTLRoundedUpToStoreGranularity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache[string, string](t, limited{memstore.New(), store.Limits{TTLGranularity: time.Millisecond}},
			&rt.Options[string, string]{TTL: 1500 * time.Microsecond})
		r, err := c.Fetch(context.Background(), "k", echo)
		require.NoError(t, err)
		assert.Equal(t, time.Now().Add(2*time.Millisecond), r.Expires)
	})
}

func TestSourceString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "cache", rt.SourceCache.String())
	assert.Equal(t, "loader", rt.SourceLoader.String())
	assert.Equal(t, "shared", rt.SourceShared.String())
	assert.Equal(t, "lock-wait", rt.SourceLockWait.String())
	assert.Equal(t, "stale", rt.SourceStale.String())
	assert.Equal(t, "near", rt.SourceNear.String())
	assert.Equal(t, "Source(9)", rt.Source(9).String())
}

// TestWaiterIsToldWhenTheValueLands: with a store that notifies (memstore
// does, in process), a process waiting on another's load returns the
// moment the value lands, with a store call or two, not a poll every few
// milliseconds.
func TestWaiterIsToldWhenTheValueLands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		holder := newCache[string, string](t, mem, nil)
		fs := storetest.NewFaultyStore(mem)
		waiter := newCache[string, string](t, fs, nil)
		var landed time.Time
		go func() {
			_, _ = holder.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
				time.Sleep(400 * time.Millisecond) // under the safety-net poll (Lock.TTL/10)
				landed = time.Now()
				return "v", nil
			})
		}()
		synctest.Wait()
		fs.ResetCalls()
		r, err := waiter.Fetch(context.Background(), "k", echo)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceLockWait, r.Source)
		assert.Zero(t, time.Since(landed), "returned the moment the value landed")
		assert.Equal(t, 2, fs.Calls(storetest.OpGet), "the first read, and one when told the key changed")
		assert.Zero(t, fs.Calls(storetest.OpSetIfAbsent))
	})
}

// TestWaiterPollsWhenTheStoreCannotNotify: with no notifications, a waiter
// polls with one Get per poll, backing off from 1ms to 3ms, and returns
// within one capped poll of the value landing.
func TestWaiterPollsWhenTheStoreCannotNotify(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		holder := newCache[string, string](t, mem, nil)
		fs := storetest.NewFaultyStore(storetest.Plain(mem))
		waiter := newCache[string, string](t, fs, nil)
		var landed time.Time
		go func() {
			_, _ = holder.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
				time.Sleep(time.Second)
				landed = time.Now()
				return "v", nil
			})
		}()
		synctest.Wait()
		r, err := waiter.Fetch(context.Background(), "k", echo)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceLockWait, r.Source)
		assert.LessOrEqual(t, time.Since(landed), rt.DefaultMaxPollInterval*6/5, "returned within one capped poll of the value landing")
		gets := fs.Calls(storetest.OpGet)
		assert.LessOrEqual(t, gets, int(time.Second/(rt.DefaultMaxPollInterval*4/5))+10, "polls")
		assert.GreaterOrEqual(t, gets, int(time.Second/(rt.DefaultMaxPollInterval*6/5)), "polls")
		assert.Zero(t, fs.Calls(storetest.OpSetIfAbsent), "no lease attempt while the lease is held")
	})
}
