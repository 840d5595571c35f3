package readthrough_test

// The near cache: repeat hits from process memory, never past their
// entry's freshness, evicted when any writer changes the key.

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

func nearOpts(o *rt.Options[string, string]) *rt.Options[string, string] {
	if o == nil {
		o = &rt.Options[string, string]{}
	}
	o.Near = rt.NearOptions{MaxEntries: 1000}
	return o
}

// TestNearHitsMakeNoStoreCall: after a key is loaded or read once, later
// calls are answered from memory: SourceNear, no store call. The process
// that loaded it keeps what it wrote, with no read to make the copy.
func TestNearHitsMakeNoStoreCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache(t, fs, nearOpts(nil))
		l := countLoads(echo)
		_, err := c.GetOrLoad(context.Background(), "k", l.load)
		require.NoError(t, err)
		synctest.Wait()
		r, err := c.Fetch(context.Background(), "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceNear, r.Source, "the loader's process kept what it wrote")
		other := newCache(t, fs, nearOpts(nil))
		r, err = other.Fetch(context.Background(), "k", l.load) // another process: a read makes its copy
		require.NoError(t, err)
		assert.Equal(t, rt.SourceCache, r.Source)
		r, err = other.Fetch(context.Background(), "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceNear, r.Source)
		fs.ResetCalls()
		for range 10 {
			r, err := c.Fetch(context.Background(), "k", l.load)
			require.NoError(t, err)
			assert.Equal(t, rt.SourceNear, r.Source)
			assert.Equal(t, "value of k", r.Value)
		}
		assert.Zero(t, fs.TotalCalls(), "no store call")
		st := c.Stats()
		assert.EqualValues(t, 11, st.NearHits)
		assert.EqualValues(t, 11, st.Hits, "near hits count in Hits too")
		assert.EqualValues(t, 1, st.NearEntries)
		assert.Equal(t, 1, l.n())
	})
}

// TestNearCopyNeverOutlivesItsEntry: a copy is never served past its
// entry's fresh-until, nor a not-found past NegativeTTL.
func TestNearCopyNeverOutlivesItsEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), nearOpts(&rt.Options[string, string]{TTL: 10 * time.Second, NegativeTTL: 2 * time.Second}))
		l := countLoads(func(_ context.Context, k string) (string, error) {
			if k == "missing" {
				return "", rt.ErrNotFound
			}
			return "v", nil
		})
		for _, k := range []string{"k", "missing"} {
			_, _ = c.GetOrLoad(context.Background(), k, l.load)
			_, _ = c.GetOrLoad(context.Background(), k, l.load) // read: copied
		}
		r, err := c.Fetch(context.Background(), "missing", l.load)
		assert.ErrorIs(t, err, rt.ErrNotFound)
		assert.Equal(t, rt.SourceNear, r.Source)

		time.Sleep(2 * time.Second)
		r, err = c.Fetch(context.Background(), "missing", l.load)
		assert.ErrorIs(t, err, rt.ErrNotFound)
		assert.Equal(t, rt.SourceLoader, r.Source, "a not-found copy lasts NegativeTTL at most")

		time.Sleep(8*time.Second - time.Nanosecond)
		r, _ = c.Fetch(context.Background(), "k", l.load)
		assert.Equal(t, rt.SourceNear, r.Source, "fresh until its last nanosecond")
		time.Sleep(time.Nanosecond)
		r, _ = c.Fetch(context.Background(), "k", l.load)
		assert.Equal(t, rt.SourceLoader, r.Source, "never past fresh-until")
	})
}

// TestNearCopiesAreEvictedByEveryWriter: a Set, a Delete, a load written
// back by another process, a raw write to the store key: once the writer's
// call returns, no Cache over that memstore serves the old copy.
func TestNearCopiesAreEvictedByEveryWriter(t *testing.T) {
	for _, w := range []struct {
		name  string
		write func(t *testing.T, other *rt.Cache[string, string], raw rt.Store, k string)
		want  string
	}{
		{"Set by another Cache", func(t *testing.T, other *rt.Cache[string, string], _ rt.Store, k string) {
			require.NoError(t, other.Set(context.Background(), k, "new"))
		}, "new"},
		{"Delete by another Cache", func(t *testing.T, other *rt.Cache[string, string], _ rt.Store, k string) {
			require.NoError(t, other.Delete(context.Background(), k))
		}, "reloaded"},
		{"raw Delete", func(t *testing.T, _ *rt.Cache[string, string], raw rt.Store, k string) {
			require.NoError(t, raw.Delete(context.Background(), "n:"+k))
		}, "reloaded"},
		{"a reload by another Cache", func(t *testing.T, other *rt.Cache[string, string], raw rt.Store, k string) {
			require.NoError(t, raw.Delete(context.Background(), "n:"+k))
			_, err := other.GetOrLoad(context.Background(), k, func(context.Context, string) (string, error) { return "new", nil })
			require.NoError(t, err)
		}, "new"},
	} {
		t.Run(w.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := memstore.New()
				opts := nearOpts(&rt.Options[string, string]{Namespace: "n"})
				self, other := newCache(t, mem, opts), newCache(t, mem, opts)
				_, _ = self.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) { return "old", nil })
				r, _ := self.Fetch(context.Background(), "k", nil2[string])
				require.Equal(t, rt.SourceNear, r.Source)

				w.write(t, other, mem, "k")
				r, err := self.Fetch(context.Background(), "k", func(context.Context, string) (string, error) { return "reloaded", nil })
				require.NoError(t, err)
				assert.Equal(t, w.want, r.Value)
				assert.NotEqual(t, rt.SourceNear, r.Source)
				assert.EqualValues(t, 1, self.Stats().NearEvicted)
			})
		})
	}
}

// linkStore is a memstore whose notifications the test drives: it can lose
// the link and bring it back, as a Redis connection would.
type linkStore struct {
	*memstore.Store
	mu sync.Mutex
	ls []store.Listener
}

func (s *linkStore) Notify(prefix string, l store.Listener) (func(), error) {
	stop, err := s.Store.Notify(prefix, l)
	s.mu.Lock()
	s.ls = append(s.ls, l)
	s.mu.Unlock()
	return stop, err
}

func (s *linkStore) each(f func(store.Listener)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.ls {
		f(l)
	}
}

// TestLinkLossFlushesEveryCopy: when the notification link is lost, every
// copy is dropped at once; while it is down a copy lives at most MaxAge;
// once it is back, copies are trusted again.
func TestLinkLossFlushesEveryCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &linkStore{Store: memstore.New()}
		c := newCache(t, rt.Store(s), &rt.Options[string, string]{Near: rt.NearOptions{MaxEntries: 100, MaxAge: time.Second}})
		for _, k := range []string{"a", "b", "c"} {
			_, _ = c.GetOrLoad(context.Background(), k, echo)
			_, _ = c.GetOrLoad(context.Background(), k, echo)
		}
		require.EqualValues(t, 3, c.Stats().NearEntries)

		s.each(func(l store.Listener) { l.Disconnected(errors.New("connection reset")) })
		st := c.Stats()
		assert.Zero(t, st.NearEntries, "every copy dropped at once")
		assert.EqualValues(t, 1, st.NearFlushes)

		// Down: a copy is made, but trusted only for MaxAge.
		_, _ = c.GetOrLoad(context.Background(), "a", echo)
		r, _ := c.Fetch(context.Background(), "a", echo)
		assert.Equal(t, rt.SourceNear, r.Source)
		time.Sleep(time.Second)
		r, _ = c.Fetch(context.Background(), "a", echo)
		assert.Equal(t, rt.SourceCache, r.Source, "MaxAge bounds a copy while the link is down")

		// Back: copies made now are trusted to their freshness.
		s.each(func(l store.Listener) { l.Connected(true) })
		_, _ = c.GetOrLoad(context.Background(), "b", echo)
		time.Sleep(time.Minute)
		r, _ = c.Fetch(context.Background(), "b", echo)
		assert.Equal(t, rt.SourceNear, r.Source, "covered by the link again")
	})
}

// TestStoreThatCannotNotifyBoundsCopiesByMaxAge: with a store that cannot
// notify, a copy is served at most MaxAge after another writer's change;
// MaxAge zero means the documented default, never "off".
func TestStoreThatCannotNotifyBoundsCopiesByMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		plain := storetest.Plain(mem)
		self := newCache(t, plain, &rt.Options[string, string]{Namespace: "n", Near: rt.NearOptions{MaxEntries: 100}})
		other := newCache(t, plain, &rt.Options[string, string]{Namespace: "n"})
		_, _ = self.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) { return "old", nil })
		synctest.Wait()                                                // the write-back
		_, _ = self.GetOrLoad(context.Background(), "k", nil2[string]) // copied
		copied := time.Now()
		require.NoError(t, other.Set(context.Background(), "k", "new"))
		for {
			r, err := self.Fetch(context.Background(), "k", nil2[string])
			require.NoError(t, err)
			if r.Value == "new" {
				break
			}
			require.Less(t, time.Since(copied), rt.DefaultNearMaxAge, "served the old copy past MaxAge")
			time.Sleep(10 * time.Millisecond)
		}
		assert.Equal(t, rt.DefaultNearMaxAge, time.Since(copied), "and exactly up to it")
	})
}

// TestNearCacheIsBounded: at most MaxEntries copies; evictions are counted.
func TestNearCacheIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[string, string]{Near: rt.NearOptions{MaxEntries: 50}})
		for i := range 500 {
			k := fmt.Sprint(i)
			_, _ = c.GetOrLoad(context.Background(), k, echo)
			_, _ = c.GetOrLoad(context.Background(), k, echo)
		}
		st := c.Stats()
		assert.LessOrEqual(t, st.NearEntries, uint64(50))
		assert.GreaterOrEqual(t, st.NearEvicted, uint64(450))
	})
}

// TestResilienceWorksFromNearHits: stale-while-revalidate, fail-safe and
// early refresh all work from a near copy, with no store call on the hit.
func TestResilienceWorksFromNearHits(t *testing.T) {
	t.Run("StaleWhileRevalidate", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := newCache(t, memstore.New(), nearOpts(&rt.Options[string, string]{TTL: 10 * time.Second, StaleWhileRevalidate: time.Minute}))
			l := &versioned{}
			_, _ = c.GetOrLoad(context.Background(), "k", l.load)
			_, _ = c.GetOrLoad(context.Background(), "k", l.load) // copied
			time.Sleep(11 * time.Second)
			r, err := c.Fetch(context.Background(), "k", l.load)
			require.NoError(t, err)
			assert.Equal(t, rt.SourceStale, r.Source)
			assert.Equal(t, "k v1", r.Value)
			synctest.Wait()
			assert.EqualValues(t, 2, l.calls.Load(), "refreshed in the background")
			assert.EqualValues(t, 2, c.Stats().NearHits, "the read after the load, and the stale one")
		})
	})
	t.Run("EarlyRefresh", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := newCache(t, memstore.New(), nearOpts(&rt.Options[string, string]{TTL: 10 * time.Second, EarlyRefresh: 2}))
			defer c.Close() // a refresh may be running when the calls end
			l := &versioned{delay: time.Second}
			_, _ = c.GetOrLoad(context.Background(), "k", l.load)
			for range 150 {
				time.Sleep(100 * time.Millisecond)
				r, err := c.Fetch(context.Background(), "k", l.load)
				require.NoError(t, err)
				require.NotEqual(t, rt.SourceLoader, r.Source, "a caller waited on a load at %v (refreshes %d)", time.Now(), c.Stats().Refreshes)
			}
			assert.Positive(t, c.Stats().Refreshes)
			assert.Positive(t, c.Stats().NearHits)
		})
	})
	t.Run("FailSafe", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := newCache(t, memstore.New(), nearOpts(&rt.Options[string, string]{TTL: 10 * time.Second,
				FailSafe: rt.FailSafeOptions{MaxStale: time.Hour, Throttle: 5 * time.Second}}))
			l := &versioned{}
			_, _ = c.GetOrLoad(context.Background(), "k", l.load)
			time.Sleep(11 * time.Second)
			l.failWith(errors.New("down"))
			r, err := c.Fetch(context.Background(), "k", l.load)
			require.NoError(t, err)
			assert.Equal(t, rt.SourceStale, r.Source)
			synctest.Wait()
			_, _ = c.Fetch(context.Background(), "k", l.load) // read: the re-armed value is copied
			for range 5 {
				r, err := c.Fetch(context.Background(), "k", l.load)
				require.NoError(t, err)
				assert.Equal(t, rt.SourceStale, r.Source)
			}
			assert.EqualValues(t, 2, l.calls.Load(), "the throttle holds from near hits")
			assert.Positive(t, c.Stats().NearHits)
		})
	})
}

// TestARefreshKeepsOtherProcessesCopiesUntilItLands: a background refresh
// leases beside the value (a lock key of its own), not in it, so other
// processes keep serving their near copies while it loads; its write
// evicts them once, when the new value lands.
func TestARefreshKeepsOtherProcessesCopiesUntilItLands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		opts := nearOpts(&rt.Options[string, string]{TTL: 10 * time.Second, StaleWhileRevalidate: time.Minute})
		a, b := newCache(t, mem, opts), newCache(t, mem, opts)
		l := &versioned{delay: time.Second}
		_, _ = a.GetOrLoad(context.Background(), "k", l.load)
		for _, c := range []*rt.Cache[string, string]{a, b} {
			_, _ = c.GetOrLoad(context.Background(), "k", l.load) // copied
		}
		time.Sleep(11 * time.Second)
		r, _ := a.Fetch(context.Background(), "k", l.load) // stale: a refreshes, loading for 1s
		require.Equal(t, rt.SourceStale, r.Source)
		time.Sleep(500 * time.Millisecond)
		assert.Zero(t, b.Stats().NearEvicted, "b's copy survives a's refresh taking its lease")
		r, _ = b.Fetch(context.Background(), "k", l.load)
		assert.Equal(t, "k v1", r.Value)
		assert.Equal(t, rt.SourceStale, r.Source)
		time.Sleep(time.Second)
		synctest.Wait()
		assert.EqualValues(t, 1, b.Stats().NearEvicted, "evicted once, when the refreshed value landed")
		assert.EqualValues(t, 2, l.calls.Load(), "one refresh across both processes")
		r, _ = b.Fetch(context.Background(), "k", l.load)
		assert.Equal(t, "k v2", r.Value)
	})
}

// slowLink is a memstore whose change notifications reach the Cache only
// when the test delivers them, in order: a Redis link whose invalidations
// arrive after the writer's own calls returned.
type slowLink struct {
	*memstore.Store
	mu      sync.Mutex
	l       store.Listener
	pending []string
}

func (s *slowLink) Notify(prefix string, l store.Listener) (func(), error) {
	s.mu.Lock()
	s.l = l
	s.mu.Unlock()
	return s.Store.Notify(prefix, queued{s})
}

type queued struct{ s *slowLink }

func (q queued) Connected(complete bool) { q.s.l.Connected(complete) }
func (q queued) Disconnected(err error)  { q.s.l.Disconnected(err) }
func (q queued) Changed(key string) {
	q.s.mu.Lock()
	q.s.pending = append(q.s.pending, key)
	q.s.mu.Unlock()
}

// deliver hands the Cache every notification held back so far.
func (s *slowLink) deliver() int {
	s.mu.Lock()
	keys := s.pending
	s.pending = nil
	l := s.l
	s.mu.Unlock()
	for _, k := range keys {
		l.Changed(k)
	}
	return len(keys)
}

// TestOwnWriteEchoesPassButNoOtherChange: the loader's process keeps the
// value it wrote as its near copy, and lets exactly the notifications of
// its own writes (the lease, the value) pass when they arrive late; a
// change by anyone else after them still evicts the copy.
func TestOwnWriteEchoesPassButNoOtherChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &slowLink{Store: memstore.New()}
		c := newCache(t, rt.Store(s), &rt.Options[string, string]{Namespace: "n", Near: rt.NearOptions{MaxEntries: 10}})
		other := newCache(t, rt.Store(s.Store), &rt.Options[string, string]{Namespace: "n"})
		_, err := c.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) { return "mine", nil })
		require.NoError(t, err)
		require.NoError(t, other.Set(context.Background(), "k", "theirs")) // after our write, by another process
		r, _ := c.Fetch(context.Background(), "k", nil2[string])
		assert.Equal(t, rt.SourceNear, r.Source, "kept, with no read")
		assert.Equal(t, "mine", r.Value, "the other's change is not told yet")
		assert.Equal(t, 3, s.deliver(), "the lease, our value, their Set")
		r, _ = c.Fetch(context.Background(), "k", nil2[string])
		assert.Equal(t, "theirs", r.Value, "our two echoes passed; their change evicted the copy")
	})
}
