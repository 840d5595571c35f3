package readthrough_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	rt "github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// upstream is a batch loader over a table of rows, counting each call and
// how often each key was asked for.
type upstream struct {
	mu      sync.Mutex
	rows    map[int]string
	calls   [][]int
	perKey  map[int]int
	delay   time.Duration
	err     error
	extra   map[int]string // returned although nobody asked
	panicky bool
}

func newUpstream(n int) *upstream {
	u := &upstream{rows: map[int]string{}, perKey: map[int]int{}}
	for i := range n {
		u.rows[i] = fmt.Sprintf("row %d", i)
	}
	return u
}

func (u *upstream) load(_ context.Context, keys []int) (map[int]string, error) {
	u.mu.Lock()
	u.calls = append(u.calls, slices.Sorted(slices.Values(keys)))
	for _, k := range keys {
		u.perKey[k]++
	}
	delay, err, panicky := u.delay, u.err, u.panicky
	u.mu.Unlock()
	time.Sleep(delay)
	if panicky {
		panic("batch loader exploded")
	}
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, k := range keys {
		if v, ok := u.rows[k]; ok {
			out[k] = v
		}
	}
	for k, v := range u.extra {
		out[k] = v
	}
	return out, nil
}

func (u *upstream) callCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.calls)
}

func keysUpTo(n int) []int {
	ks := make([]int, n)
	for i := range ks {
		ks[i] = i
	}
	return ks
}

// TestBatchLoadsOnlyTheMissesOnce: over 100 keys of which 90 are cached, the
// loader is called once, with exactly the 10 missing keys; the result has
// all 100. Duplicates in the input are fine.
func TestBatchLoadsOnlyTheMissesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[int, string]{Namespace: "row"})
		u := newUpstream(100)
		for k := range 90 {
			_, err := c.GetOrLoad(context.Background(), k, func(context.Context, int) (string, error) { return fmt.Sprintf("row %d", k), nil })
			require.NoError(t, err)
		}
		keys := append(keysUpTo(100), 95, 3, 95) // duplicates
		m, err := c.GetOrLoadMany(context.Background(), keys, u.load)
		require.NoError(t, err)
		assert.Len(t, m, 100)
		for k := range 100 {
			assert.Equal(t, fmt.Sprintf("row %d", k), m[k])
		}
		require.Len(t, u.calls, 1, "one loader call")
		assert.Equal(t, []int{90, 91, 92, 93, 94, 95, 96, 97, 98, 99}, u.calls[0], "with exactly the misses, each once")
		synctest.Wait()

		m, err = c.GetOrLoadMany(context.Background(), keysUpTo(100), u.load)
		require.NoError(t, err)
		assert.Len(t, m, 100)
		assert.Len(t, u.calls, 1, "all cached now")
	})
}

// TestBatchOmittedKeysAreNotFound: keys the loader leaves out are absent
// from the result, cached for NegativeTTL, and not passed to the loader
// again while cached. Keys it returns unasked are ignored.
func TestBatchOmittedKeysAreNotFound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		c := newCache(t, mem, &rt.Options[int, string]{Namespace: "row", NegativeTTL: time.Minute})
		u := newUpstream(5)
		u.extra = map[int]string{1000: "unasked"}
		m, err := c.GetOrLoadMany(context.Background(), keysUpTo(10), u.load)
		require.NoError(t, err)
		assert.Len(t, m, 5)
		assert.NotContains(t, m, 7)
		assert.NotContains(t, m, 1000, "unasked keys are not returned")
		synctest.Wait()
		assert.NotContains(t, mem.Keys(), "row:1000", "nor cached")

		outs, err := c.FetchMany(context.Background(), keysUpTo(10), u.load)
		require.NoError(t, err)
		for k := 5; k < 10; k++ {
			assert.ErrorIs(t, outs[k].Err, rt.ErrNotFound, "key %d", k)
			assert.Equal(t, rt.SourceCache, outs[k].Source)
		}
		assert.Len(t, u.calls, 1, "not-founds not asked for again while cached")
		time.Sleep(time.Minute)
		_, err = c.GetOrLoadMany(context.Background(), keysUpTo(10), u.load)
		require.NoError(t, err)
		require.Len(t, u.calls, 2)
		assert.Equal(t, []int{5, 6, 7, 8, 9}, u.calls[1], "and again once NegativeTTL passed")
	})
}

// TestBatchOverlapsLoadEachKeyOnce: overlapping batches and single calls
// for the same keys, in one Cache and across Caches over one store, load
// each key exactly once.
func TestBatchOverlapsLoadEachKeyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		u := newUpstream(100)
		u.delay = 100 * time.Millisecond
		single := func(ctx context.Context, k int) (string, error) {
			m, err := u.load(ctx, []int{k})
			return m[k], err
		}
		var wg sync.WaitGroup
		for p := range 3 { // three processes
			c := newCache(t, mem, &rt.Options[int, string]{Namespace: "row"})
			for g := range 4 {
				wg.Go(func() {
					ks := keysUpTo(100)[(p*13+g*7)%40 : 60+(p*13+g*7)%40]
					m, err := c.GetOrLoadMany(context.Background(), ks, u.load)
					assert.NoError(t, err)
					assert.Len(t, m, len(ks))
				})
				wg.Go(func() {
					v, err := c.GetOrLoad(context.Background(), 50+g, single)
					assert.NoError(t, err)
					assert.Equal(t, fmt.Sprintf("row %d", 50+g), v)
				})
			}
		}
		wg.Wait()
		for k, n := range u.perKey {
			assert.Equal(t, 1, n, "key %d loaded %d times", k, n)
		}
	})
}

// TestBatchFailures: a loader error is returned with the hits; nothing is
// cached for the keys it failed. A panic reaches the caller. A store
// failure falls back to the loader.
func TestBatchFailures(t *testing.T) {
	t.Run("loader error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			mem := memstore.New()
			c := newCache(t, mem, &rt.Options[int, string]{Namespace: "row"})
			u := newUpstream(10)
			_, err := c.GetOrLoadMany(context.Background(), keysUpTo(5), u.load)
			require.NoError(t, err)
			synctest.Wait()
			u.err = errors.New("upstream 503")
			m, err := c.GetOrLoadMany(context.Background(), keysUpTo(10), u.load)
			assert.ErrorIs(t, err, u.err)
			assert.Len(t, m, 5, "the hits are returned with the error")
			synctest.Wait()
			assert.Len(t, mem.Keys(), 5, "nothing cached for the failed keys, no lease left")
		})
	})
	t.Run("loader panic", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := newCache(t, memstore.New(), &rt.Options[int, string]{})
			u := newUpstream(10)
			u.panicky = true
			assert.PanicsWithValue(t, "batch loader exploded", func() {
				_, _ = c.GetOrLoadMany(context.Background(), keysUpTo(10), u.load)
			})
		})
	})
	t.Run("store failure", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fs := storetest.NewFaultyStore(memstore.New())
			fs.InjectAll(storetest.Fault{})
			c := newCache(t, fs, &rt.Options[int, string]{})
			u := newUpstream(10)
			m, err := c.GetOrLoadMany(context.Background(), keysUpTo(10), u.load)
			require.NoError(t, err, "the store is never a dependency")
			assert.Len(t, m, 10)
			assert.Len(t, u.calls, 1)
		})
	})
	t.Run("one caller leaves", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := newCache(t, memstore.New(), &rt.Options[int, string]{})
			u := newUpstream(10)
			u.delay = time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			done := make(chan map[int]string)
			go func() {
				m, err := c.GetOrLoadMany(context.Background(), keysUpTo(10), u.load)
				assert.NoError(t, err)
				done <- m
			}()
			synctest.Wait()
			_, err := c.GetOrLoadMany(ctx, keysUpTo(10), u.load)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Len(t, <-done, 10, "the others' load goes on")
			assert.Len(t, u.calls, 1)
		})
	})
}

// TestBatchStoreRoundTrips: on a store with batches, 100 cached keys cost
// one round trip; a batch with misses a small constant number, whatever N.
func TestBatchStoreRoundTrips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache(t, fs, &rt.Options[int, string]{Namespace: "row"})
		u := newUpstream(200)
		_, _ = c.GetOrLoadMany(context.Background(), keysUpTo(100), u.load) // warm; learns the wrapper cannot GetOrSet
		synctest.Wait()
		fs.ResetCalls()
		m, err := c.GetOrLoadMany(context.Background(), keysUpTo(100), u.load)
		require.NoError(t, err)
		assert.Len(t, m, 100)
		assert.Equal(t, 1, fs.TotalCalls(), "100 cached keys: one round trip")

		fs.ResetCalls()
		m, err = c.GetOrLoadMany(context.Background(), keysUpTo(200), u.load)
		require.NoError(t, err)
		assert.Len(t, m, 200)
		synctest.Wait()
		assert.Equal(t, 3, fs.TotalCalls(), "read, lease the 100 misses, write them back")
		assert.Equal(t, 3, fs.Calls(storetest.OpBatch))
	})
}

// TestBatchHonoursNearCopiesAndFencing: near copies answer what they can;
// a Set or Delete during a batch load wins over it.
func TestBatchHonoursNearCopiesAndFencing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache(t, fs, &rt.Options[int, string]{Namespace: "row", Near: rt.NearOptions{MaxEntries: 100}})
		u := newUpstream(10)
		_, _ = c.GetOrLoadMany(context.Background(), keysUpTo(5), u.load)
		synctest.Wait()
		_, _ = c.GetOrLoadMany(context.Background(), keysUpTo(5), u.load) // read: copied
		fs.ResetCalls()
		outs, err := c.FetchMany(context.Background(), keysUpTo(5), u.load)
		require.NoError(t, err)
		for k := range 5 {
			assert.Equal(t, rt.SourceNear, outs[k].Source)
		}
		assert.Zero(t, fs.TotalCalls(), "near copies make no store call")

		u.delay = time.Second
		go func() { _, _ = c.GetOrLoadMany(context.Background(), keysUpTo(10), u.load) }()
		time.Sleep(100 * time.Millisecond)
		require.NoError(t, c.Set(context.Background(), 7, "written during the load"))
		require.NoError(t, c.Delete(context.Background(), 8))
		time.Sleep(time.Second)
		synctest.Wait()
		v, err := c.GetOrLoad(context.Background(), 7, nil2int)
		require.NoError(t, err)
		assert.Equal(t, "written during the load", v, "the Set won")
		u.delay = 0
		before := u.perKey[8]
		_, err = c.GetOrLoadMany(context.Background(), []int{8}, u.load)
		require.NoError(t, err)
		assert.Equal(t, before+1, u.perKey[8], "the Delete won: loaded again")
	})
}

func nil2int(context.Context, int) (string, error) {
	return "", errors.New("loader called on what should be a hit")
}

// TestBatchResilience: stale-while-revalidate and fail-safe apply per key.
func TestBatchResilience(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[int, string]{
			TTL: 10 * time.Second, StaleWhileRevalidate: 10 * time.Second, FailSafe: rt.FailSafeOptions{MaxStale: time.Hour},
		})
		u := newUpstream(10)
		_, err := c.GetOrLoadMany(context.Background(), keysUpTo(10), u.load)
		require.NoError(t, err)
		time.Sleep(15 * time.Second) // within SWR
		outs, err := c.FetchMany(context.Background(), keysUpTo(10), u.load)
		require.NoError(t, err)
		for k := range 10 {
			assert.Equal(t, rt.SourceStale, outs[k].Source)
		}
		synctest.Wait()
		time.Sleep(25 * time.Second) // past SWR: fail-safe
		u.err = errors.New("down")
		outs, err = c.FetchMany(context.Background(), keysUpTo(10), u.load)
		require.NoError(t, err)
		for k := range 10 {
			assert.NoError(t, outs[k].Err)
			assert.Equal(t, rt.SourceStale, outs[k].Source, "key %d", k)
		}
	})
}
