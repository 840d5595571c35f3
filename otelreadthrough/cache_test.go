package otelreadthrough_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
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

// The tests below drive a real Cache and read what it reported through
// the SDK: each event kind reaches the right instrument from the place
// readthrough records it.

func newCache(t *testing.T, s rt.Store, o *rt.Options[string, string]) *rt.Cache[string, string] {
	t.Helper()
	c, err := rt.New(s, o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestCacheRequestsAndLoads: misses, hits by source (store, near), cached
// not-founds, and the loads behind them with their durations.
func TestCacheRequestsAndLoads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMeter(t)
		// Two processes over one store, reporting to one meter: one loads,
		// the other reads what it wrote.
		store := memstore.New()
		opts := func() *rt.Options[string, string] {
			return &rt.Options[string, string]{
				Namespace: "product", Recorder: m.rec,
				Near: rt.NearOptions{MaxEntries: 10}, NegativeTTL: time.Minute,
			}
		}
		loader, reader := newCache(t, store, opts()), newCache(t, store, opts())
		load := func(ctx context.Context, k string) (string, error) {
			time.Sleep(250 * time.Millisecond) // the bubble's clock: an exact duration
			if k == "gone" {
				return "", rt.ErrNotFound
			}
			return "value of " + k, nil
		}
		var got []rt.Source
		for _, k := range []string{"a", "gone"} {
			for _, c := range []*rt.Cache[string, string]{loader, reader, reader} {
				r, _ := c.Fetch(context.Background(), k, load)
				got = append(got, r.Source)
			}
		}
		// The scenario: a load, a store hit that keeps a near copy, a near hit.
		require.Equal(t, []rt.Source{rt.SourceLoader, rt.SourceCache, rt.SourceNear, rt.SourceLoader, rt.SourceCache, rt.SourceNear}, got)

		col := m.collect(t)
		p := ns("product")
		assert.EqualValues(t, 2, col.count(requests, p, result("miss")))
		assert.EqualValues(t, 1, col.count(requests, p, result("hit"), source("cache"), notFound(false)))
		assert.EqualValues(t, 1, col.count(requests, p, result("hit"), source("near"), notFound(false)))
		assert.EqualValues(t, 1, col.count(requests, p, result("hit"), source("cache"), notFound(true)))
		assert.EqualValues(t, 1, col.count(requests, p, result("hit"), source("near"), notFound(true)))
		assert.EqualValues(t, 6, col.total(requests), "one per call, nothing else")

		n, sum := col.hist(loadDur, p, outcome("ok"))
		assert.EqualValues(t, 1, n)
		assert.Equal(t, 0.25, sum)
		n, sum = col.hist(loadDur, p, outcome("not-found"))
		assert.EqualValues(t, 1, n)
		assert.Equal(t, 0.25, sum)

		// Four calls read the store (two misses, two store hits); the near
		// hits did not. memstore answers in no time on the bubble's clock.
		n, sum = col.hist(storeDur, p, op("get"))
		assert.EqualValues(t, 4, n)
		assert.Zero(t, sum)
		for _, l := range col.lines() {
			assert.NotContains(t, l, "error.type", "no store call failed")
		}
	})
}

// TestCacheLoadOutcomes: a load that fails, panics, exits or times out
// is recorded with that outcome and how long it ran.
func TestCacheLoadOutcomes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMeter(t)
		c := newCache(t, memstore.New(), &rt.Options[string, string]{
			Namespace: "p", Recorder: m.rec, LoadTimeout: 10 * time.Second,
		})
		errUpstream := errors.New("upstream down")
		loaders := map[string]rt.Loader[string, string]{
			"error": func(context.Context, string) (string, error) {
				time.Sleep(time.Second)
				return "", errUpstream
			},
			"panic": func(context.Context, string) (string, error) {
				time.Sleep(2 * time.Second)
				panic("loader bug")
			},
			"exit": func(context.Context, string) (string, error) {
				time.Sleep(3 * time.Second)
				runtime.Goexit()
				return "", nil
			},
			"timeout": func(ctx context.Context, _ string) (string, error) {
				<-ctx.Done() // until LoadTimeout
				return "", ctx.Err()
			},
		}
		for k, load := range loaders {
			func() {
				defer func() { _ = recover() }() // the panic reaches the caller
				_, err := c.GetOrLoad(context.Background(), k, load)
				require.Error(t, err, k)
			}()
			synctest.Wait()
		}

		col := m.collect(t)
		for _, tt := range []struct {
			outcome string
			seconds float64
		}{{"error", 1}, {"panic", 2}, {"exit", 3}, {"timeout", 10}} {
			n, sum := col.hist(loadDur, ns("p"), outcome(tt.outcome))
			assert.EqualValues(t, 1, n, tt.outcome)
			assert.Equal(t, tt.seconds, sum, tt.outcome)
		}
		n, _ := col.hist(loadDur, ns("p"), outcome("ok"))
		assert.Zero(t, n)
		// Each call is a miss, but readthrough records none for a call whose
		// load panicked (it re-panics before counting): at least the other three.
		assert.GreaterOrEqual(t, col.count(requests, ns("p"), result("miss")), int64(3))
	})
}

// TestCacheStoreErrors: a store call that fails is recorded with its
// operation and error.type: the store client's error type, a timeout
// (StoreTimeout), an entry too large.
func TestCacheStoreErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMeter(t)
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache(t, fs, &rt.Options[string, string]{
			Namespace: "p", Recorder: m.rec, StoreTimeout: 100 * time.Millisecond,
		})
		ctx := context.Background()

		fs.Inject(storetest.OpGet, storetest.Fault{Err: &replyError{"LOADING"}, Times: 1})
		_, err := c.GetOrLoad(ctx, "a", echo)
		require.NoError(t, err, "a store error falls back to the loader")
		synctest.Wait() // its write-back, in the background

		fs.Inject(storetest.OpGet, storetest.Fault{Delay: time.Hour, Times: 1})
		_, err = c.GetOrLoad(ctx, "b", echo)
		require.NoError(t, err)
		synctest.Wait()

		fs.Inject(storetest.OpCompareAndSwap, storetest.Fault{Err: store.ErrTooLarge, Times: 1})
		fs.Inject(storetest.OpSet, storetest.Fault{Err: store.ErrTooLarge, Times: 1})
		_, err = c.GetOrLoad(ctx, "c", echo)
		require.NoError(t, err)
		synctest.Wait()

		col := m.collect(t)
		n, _ := col.hist(storeDur, ns("p"), op("get"), errType("*github.com/readthrough-go/readthrough/otelreadthrough_test.replyError"))
		assert.EqualValues(t, 1, n)
		n, sum := col.hist(storeDur, ns("p"), op("get"), errType("timeout"))
		assert.EqualValues(t, 1, n)
		assert.Equal(t, 0.1, sum, "a hung call is recorded at StoreTimeout")
		tooLarge := 0
		for _, l := range col.lines() {
			if strings.Contains(l, "error.type=too_large") {
				tooLarge++
			}
		}
		assert.Equal(t, 1, tooLarge, "the write-back that was too large: %v", col.lines())
		n, _ = col.hist(storeDur, ns("p"), op("get"))
		assert.EqualValues(t, 1, n, "c's get succeeded")
		assert.EqualValues(t, 3, col.count(requests, ns("p"), result("miss")))
		assert.EqualValues(t, 2, c.Stats().StoreErrors, "Stats agree: the too-large write is not a store failure")
	})
}

// TestCacheLockWait: two Caches over one store stand for two processes;
// the second waits on the first's lease, and is served its value.
func TestCacheLockWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMeter(t)
		s := memstore.New()
		opts := &rt.Options[string, string]{Namespace: "p", Recorder: m.rec}
		a, b := newCache(t, s, opts), newCache(t, s, opts)
		release := make(chan struct{})
		var loads atomic.Int32
		slow := func(_ context.Context, k string) (string, error) {
			loads.Add(1)
			<-release
			return "value of " + k, nil
		}
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = a.GetOrLoad(context.Background(), "k", slow) })
		synctest.Wait() // a holds the lease
		var r rt.Result[string]
		wg.Go(func() { r, _ = b.Fetch(context.Background(), "k", slow) })
		synctest.Wait() // b waits on it
		time.Sleep(3 * time.Second)
		close(release)
		wg.Wait()

		require.EqualValues(t, 1, loads.Load(), "one load across both processes")
		require.Equal(t, rt.SourceLockWait, r.Source)
		col := m.collect(t)
		n, sum := col.hist(waitDur, ns("p"), outcome("value"))
		assert.EqualValues(t, 1, n)
		assert.Equal(t, 3.0, sum, "b waited from its lease attempt until the value landed")
		// b's call is counted once: readthrough records it as a miss (it
		// started a flight), though Event's doc lists lock-wait among the
		// sources of a hit; either way it is one request.
		lockWaitHits := col.count(requests, ns("p"), result("hit"), source("lock-wait"), notFound(false))
		assert.EqualValues(t, 2, col.count(requests, ns("p"), result("miss"))+lockWaitHits)
		assert.EqualValues(t, 2, col.total(requests))
		n, _ = col.hist(loadDur, ns("p"), outcome("ok"))
		assert.EqualValues(t, 1, n)
	})
}

// TestCacheBreaker: the breaker opens after failed store calls, probes
// after its cool-down, and closes when the store is back.
func TestCacheBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMeter(t)
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache(t, fs, &rt.Options[string, string]{
			Namespace: "p", Recorder: m.rec,
			Breaker: rt.BreakerOptions{Failures: 2, CoolDown: time.Second},
		})
		ctx := context.Background()
		fs.InjectAll(storetest.Fault{})
		for i := range 3 {
			_, err := c.GetOrLoad(ctx, fmt.Sprint("k", i), echo)
			require.NoError(t, err)
		}
		col := m.collect(t)
		assert.EqualValues(t, 1, col.count(breaker, ns("p"), state("open")))
		assert.Zero(t, col.count(breaker, ns("p"), state("half-open")))
		assert.EqualValues(t, 1, c.Stats().BreakerOpens)

		fs.Heal()
		time.Sleep(time.Second)
		_, err := c.GetOrLoad(ctx, "k9", echo)
		require.NoError(t, err)
		synctest.Wait()
		col = m.collect(t)
		assert.EqualValues(t, 1, col.count(breaker, ns("p"), state("open")))
		assert.EqualValues(t, 1, col.count(breaker, ns("p"), state("half-open")))
		assert.EqualValues(t, 1, col.count(breaker, ns("p"), state("closed")))
		assert.EqualValues(t, 3, col.total(breaker))
	})
}

// TestCacheNearEvictions: copies dropped because the near cache is full,
// because another writer changed the key, and all at once when the
// store's notification link is lost.
func TestCacheNearEvictions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMeter(t)
		fs := storetest.NewFaultyStore(memstore.New())
		near := newCache(t, fs, &rt.Options[string, string]{
			Namespace: "p", Recorder: m.rec, Near: rt.NearOptions{MaxEntries: 4},
		})
		writer := newCache(t, fs, &rt.Options[string, string]{Namespace: "p"})
		ctx := context.Background()
		read := func(k string) rt.Source {
			r, err := near.Fetch(ctx, k, echo)
			require.NoError(t, err)
			synctest.Wait() // the write-back, in the background on a store that may block
			return r.Source
		}

		// Changed: another writer's Set evicts this process's copy. (A load
		// makes no copy; the next read from the store does.)
		read("x")
		read("x")
		require.Equal(t, rt.SourceNear, read("x"))
		require.NoError(t, writer.Set(ctx, "x", "new"))
		synctest.Wait()
		assert.EqualValues(t, 1, m.collect(t).count(evictions, ns("p"), reason("changed")))

		// By size: more keys than the near cache holds.
		for i := range 50 {
			k := fmt.Sprint("k", i)
			read(k)
			read(k)
		}
		col := m.collect(t)
		bySize := col.count(evictions, ns("p"), reason("size"))
		assert.Positive(t, bySize)
		assert.EqualValues(t, near.Stats().NearEvicted, bySize+1, "Stats count the same evictions")

		// Flush: the link is lost, every copy goes.
		copies := near.Stats().NearEntries
		require.Positive(t, copies)
		fs.Disconnect(errors.New("connection reset"))
		synctest.Wait()
		col = m.collect(t)
		assert.EqualValues(t, 1, col.count(flushes, ns("p")))
		assert.EqualValues(t, copies, col.count(evictions, ns("p"), reason("flush")))
		assert.EqualValues(t, 1, near.Stats().NearFlushes)
	})
}

func echo(_ context.Context, k string) (string, error) { return "value of " + k, nil }
