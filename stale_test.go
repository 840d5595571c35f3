package readthrough_test

import (
	"context"
	"errors"
	"fmt"
	"math"
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

// versioned is a loader whose answers change with each call, so a test can
// tell a refreshed value from the one before.
type versioned struct {
	calls atomic.Int32
	delay time.Duration
	fail  atomic.Pointer[error]
}

func (v *versioned) load(ctx context.Context, k string) (string, error) {
	n := v.calls.Add(1)
	time.Sleep(v.delay)
	if err := v.fail.Load(); err != nil {
		return "", *err
	}
	return fmt.Sprintf("%s v%d", k, n), nil
}

func (v *versioned) failWith(err error) { v.fail.Store(&err) }

func TestStaleWhileRevalidateAcrossProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		opts := &rt.Options[string, string]{TTL: 10 * time.Second, StaleWhileRevalidate: time.Minute}
		l := &versioned{delay: 200 * time.Millisecond}
		caches := make([]*rt.Cache[string, string], 4)
		for i := range caches {
			caches[i] = newCache(t, s, opts)
		}
		ctx := context.Background()
		_, err := caches[0].GetOrLoad(ctx, "k", l.load)
		require.NoError(t, err)

		time.Sleep(11 * time.Second) // expired, within the stale window
		start := time.Now()
		var wg sync.WaitGroup
		for _, c := range caches {
			for range 8 {
				wg.Go(func() {
					r, err := c.Fetch(ctx, "k", l.load)
					assert.NoError(t, err)
					assert.Equal(t, rt.SourceStale, r.Source)
					assert.Equal(t, "k v1", r.Value, "the stale value, at once")
				})
			}
		}
		wg.Wait()
		assert.Zero(t, time.Since(start), "no caller waited for the refresh")

		synctest.Wait()
		time.Sleep(time.Second) // the refresh lands
		synctest.Wait()
		assert.EqualValues(t, 2, l.calls.Load(), "one background refresh across four processes")
		r, err := caches[3].Fetch(ctx, "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceCache, r.Source)
		assert.Equal(t, "k v2", r.Value)
		var refreshes, stale uint64
		for _, c := range caches {
			refreshes += c.Stats().Refreshes
			stale += c.Stats().StaleHits
		}
		assert.EqualValues(t, 1, refreshes)
		assert.EqualValues(t, 32, stale)

		time.Sleep(2 * time.Minute) // past TTL and the stale window: a plain miss
		r, err = caches[0].Fetch(ctx, "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceLoader, r.Source)
	})
}

func TestEarlyRefreshKeepsAHotKeyWarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// β = 2: a refresh starts at least Δ before expiry in all but about
		// 4 in a million expiries (XFetch's tail, with a call per 100ms);
		// β = 1 would miss about 2 in a hundred.
		c := newCache(t, memstore.New(), &rt.Options[string, string]{TTL: 10 * time.Second, EarlyRefresh: 2})
		defer c.Close()
		l := &versioned{delay: time.Second} // Δ = 1s
		ctx := context.Background()
		_, err := c.GetOrLoad(ctx, "hot", l.load)
		require.NoError(t, err)
		// A hot key: a call every 100ms for a minute, across six expiries.
		for range 600 {
			time.Sleep(100 * time.Millisecond)
			r, err := c.Fetch(ctx, "hot", l.load)
			require.NoError(t, err)
			require.Equal(t, rt.SourceCache, r.Source, "a caller waited on a load at %v", time.Now())
		}
		st := c.Stats()
		assert.Zero(t, st.Misses-1, "only the first call missed")
		assert.GreaterOrEqual(t, st.Refreshes, uint64(5), "refreshed before each expiry")
		assert.LessOrEqual(t, st.Refreshes, uint64(30), "but not on every hit (600 hits)")
	})
}

func TestFailSafeServesStaleAndThrottles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[string, string]{
			TTL:      10 * time.Second,
			FailSafe: rt.FailSafeOptions{MaxStale: time.Minute, Throttle: 5 * time.Second},
		})
		l := &versioned{}
		ctx := context.Background()
		_, err := c.GetOrLoad(ctx, "k", l.load)
		require.NoError(t, err)

		time.Sleep(11 * time.Second)
		l.failWith(errors.New("upstream down"))
		r, err := c.Fetch(ctx, "k", l.load)
		require.NoError(t, err, "fail-safe hides the failure")
		assert.Equal(t, rt.SourceStale, r.Source)
		assert.Equal(t, "k v1", r.Value)
		assert.EqualValues(t, 2, l.calls.Load())

		// Within the throttle the upstream is left alone.
		for range 10 {
			time.Sleep(400 * time.Millisecond)
			r, err = c.Fetch(ctx, "k", l.load)
			require.NoError(t, err)
			assert.Equal(t, "k v1", r.Value)
			assert.Equal(t, rt.SourceStale, r.Source)
		}
		assert.EqualValues(t, 2, l.calls.Load(), "no call to a failing upstream during the throttle")

		time.Sleep(time.Second) // the throttle is over: try again, fail again, re-arm
		_, err = c.GetOrLoad(ctx, "k", l.load)
		require.NoError(t, err)
		assert.EqualValues(t, 3, l.calls.Load())

		// Past the fail-safe window, the failure surfaces.
		time.Sleep(time.Minute)
		_, err = c.GetOrLoad(ctx, "k", l.load)
		assert.ErrorContains(t, err, "upstream down")
		assert.EqualValues(t, 2, c.Stats().LoadErrors-1, "three failed loads, two served stale")
	})
}

func TestFailSafeCoversPanicsButNotNotFound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[string, string]{
			TTL:      10 * time.Second,
			FailSafe: rt.FailSafeOptions{MaxStale: time.Minute, Throttle: time.Second},
		})
		ctx := context.Background()
		_, err := c.GetOrLoad(ctx, "k", echo)
		require.NoError(t, err)
		time.Sleep(11 * time.Second)
		r, err := c.Fetch(ctx, "k", func(context.Context, string) (string, error) { panic("boom") })
		require.NoError(t, err, "a panicking loader is a failed load: the stale value is served")
		assert.Equal(t, rt.SourceStale, r.Source)

		time.Sleep(2 * time.Second)
		_, err = c.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "", rt.ErrNotFound })
		assert.ErrorIs(t, err, rt.ErrNotFound, "a not-found is an answer, not a failure")
	})
}

func TestSoftTimeoutReturnsStaleAndTheLoadLands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[string, string]{
			TTL:             10 * time.Second,
			FailSafe:        rt.FailSafeOptions{MaxStale: time.Minute},
			SoftLoadTimeout: 100 * time.Millisecond,
		})
		l := &versioned{}
		ctx := context.Background()
		_, err := c.GetOrLoad(ctx, "k", l.load)
		require.NoError(t, err)

		time.Sleep(11 * time.Second)
		l.delay = time.Second
		start := time.Now()
		r, err := c.Fetch(ctx, "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, 100*time.Millisecond, time.Since(start), "returned at the soft timeout")
		assert.Equal(t, rt.SourceStale, r.Source)
		assert.Equal(t, "k v1", r.Value)

		time.Sleep(time.Second) // the slow load lands
		r, err = c.Fetch(ctx, "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceCache, r.Source)
		assert.Equal(t, "k v2", r.Value)
		assert.EqualValues(t, 2, l.calls.Load())
	})
}

func TestBreakerSkipsTheStoreThenProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache(t, fs, &rt.Options[string, string]{
			Breaker: rt.BreakerOptions{Failures: 3, CoolDown: 5 * time.Second},
		})
		ctx := context.Background()
		fs.InjectAll(storetest.Fault{})
		for range 20 {
			v, err := c.GetOrLoad(ctx, "k", echo)
			require.NoError(t, err)
			require.Equal(t, "value of k", v)
		}
		st := c.Stats()
		assert.EqualValues(t, 1, st.BreakerOpens)
		assert.EqualValues(t, 3, st.StoreErrors, "three failed requests open it; then the store is left alone")
		assert.EqualValues(t, 3, fs.TotalCalls()-fs.Calls(storetest.OpNotify), "a request stops at its first failure")
		assert.Positive(t, st.StoreSkips)
		assert.EqualValues(t, 20, st.Loads, "the loader served every call")

		fs.Heal()
		time.Sleep(5 * time.Second) // cool-down over: the next call probes, succeeds, closes
		for range 5 {
			_, err := c.GetOrLoad(ctx, "k", echo)
			require.NoError(t, err)
			synctest.Wait() // its write-back lands
		}
		st = c.Stats()
		assert.EqualValues(t, 4, st.Hits, "hits resume once the probe succeeds")
		assert.EqualValues(t, 21, st.Loads)
	})
}

func TestRefreshesAreBoundedAndCloseStopsThem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[int, int]{
			TTL: 10 * time.Second, StaleWhileRevalidate: time.Minute, MaxRefreshes: 2,
		})
		var running, peak atomic.Int32
		load := func(ctx context.Context, k int) (int, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(time.Second)
			return k, nil
		}
		ctx := context.Background()
		for k := range 10 {
			_, err := c.GetOrLoad(ctx, k, load)
			require.NoError(t, err)
		}
		time.Sleep(11 * time.Second)
		for k := range 10 {
			r, err := c.Fetch(ctx, k, load)
			require.NoError(t, err)
			assert.Equal(t, rt.SourceStale, r.Source)
		}
		synctest.Wait()
		assert.EqualValues(t, 2, peak.Load(), "at most MaxRefreshes at once")
		assert.EqualValues(t, 8, c.Stats().RefreshSkips)
		require.NoError(t, c.Close()) // cancels the two running, and waits for them
		assert.Zero(t, running.Load(), "nothing runs after Close returns")

		_, err := c.Fetch(ctx, 0, load)
		assert.ErrorIs(t, err, rt.ErrClosed, "calls after Close fail plainly")
	})
}

func TestNewValidatesResilienceOptions(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	for name, o := range map[string]*rt.Options[string, int]{
		"negative SWR":          {StaleWhileRevalidate: -1},
		"negative MaxStale":     {FailSafe: rt.FailSafeOptions{MaxStale: -1}},
		"negative Throttle":     {FailSafe: rt.FailSafeOptions{Throttle: -1}},
		"negative soft timeout": {SoftLoadTimeout: -1},
		"negative beta":         {EarlyRefresh: -0.5},
		"NaN beta":              {EarlyRefresh: math.NaN()},
		"infinite beta":         {EarlyRefresh: math.Inf(1)},
		"negative failures":     {Breaker: rt.BreakerOptions{Failures: -1}},
		"negative cool-down":    {Breaker: rt.BreakerOptions{CoolDown: -1}},
		"negative refreshes":    {MaxRefreshes: -1},
	} {
		_, err := rt.New(s, o)
		assert.ErrorIs(t, err, rt.ErrInvalidOptions, name)
	}
	_, err := rt.New[string, int](limited{s, store.Limits{MaxTTL: time.Hour}}, &rt.Options[string, int]{
		TTL: 30 * time.Minute, StaleWhileRevalidate: 45 * time.Minute,
	})
	assert.ErrorContains(t, err, "stale window", "the store keeps entries for TTL plus the stale window")
}
