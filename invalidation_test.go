package readthrough_test

// Invalidation that sticks: a Set or a Delete, by this Cache, another
// Cache over the store, or a writer that is not a Cache at all, made while
// a load is in flight, wins over that load.

import (
	"context"
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

type product struct {
	ID    int
	Price int
}

// db is an upstream whose loads read the row at their start and return it
// after a delay: a load that began before an update returns the old row.
type db struct {
	price atomic.Int64
	loads atomic.Int32
	delay time.Duration
}

func (d *db) load(_ context.Context, id int) (product, error) {
	d.loads.Add(1)
	p := product{ID: id, Price: int(d.price.Load())}
	time.Sleep(d.delay)
	return p, nil
}

// writers are the ways a key can change while a load is in flight.
var writers = []struct {
	name  string
	write func(t *testing.T, self, other *rt.Cache[int, product], raw rt.Store, p product)
	// deletes: the write removes the key rather than setting it
	deletes bool
}{
	{"Set by the same Cache", func(t *testing.T, self, _ *rt.Cache[int, product], _ rt.Store, p product) {
		require.NoError(t, self.Set(context.Background(), p.ID, p))
	}, false},
	{"Set by another Cache", func(t *testing.T, _, other *rt.Cache[int, product], _ rt.Store, p product) {
		require.NoError(t, other.Set(context.Background(), p.ID, p))
	}, false},
	{"Delete by the same Cache", func(t *testing.T, self, _ *rt.Cache[int, product], _ rt.Store, p product) {
		require.NoError(t, self.Delete(context.Background(), p.ID))
	}, true},
	{"Delete by another Cache", func(t *testing.T, _, other *rt.Cache[int, product], _ rt.Store, p product) {
		require.NoError(t, other.Delete(context.Background(), p.ID))
	}, true},
	{"raw Delete by a writer that is not a Cache", func(t *testing.T, self, _ *rt.Cache[int, product], raw rt.Store, p product) {
		require.NoError(t, raw.Delete(context.Background(), self.Key(p.ID)))
	}, true},
}

// TestInvalidationDuringALoadWins: the load's callers get the value they
// loaded, but the load never overwrites the newer state: after a Set the
// key holds the new value and no reload happens; after a Delete the load's
// result is not cached and the next call loads again. (It used to cache
// price=10, read before the update, for a full TTL.)
func TestInvalidationDuringALoadWins(t *testing.T) {
	for _, w := range writers {
		t.Run(w.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := memstore.New()
				up := &db{delay: time.Second}
				up.price.Store(10)
				opts := &rt.Options[int, product]{Namespace: "product", TTL: 5 * time.Minute}
				self, other := newCache(t, mem, opts), newCache(t, mem, opts)

				got := make(chan product)
				go func() {
					p, err := self.GetOrLoad(context.Background(), 1, up.load)
					assert.NoError(t, err)
					got <- p
				}()
				time.Sleep(500 * time.Millisecond) // the load has read price=10
				up.price.Store(20)                 // the update...
				w.write(t, self, other, mem, product{ID: 1, Price: 20})
				assert.Equal(t, 10, (<-got).Price, "the load's callers get what it loaded")
				synctest.Wait()

				for _, c := range []*rt.Cache[int, product]{self, other} {
					r, err := c.Fetch(context.Background(), 1, up.load)
					require.NoError(t, err)
					assert.Equal(t, 20, r.Value.Price, "never the value loaded before the write")
					synctest.Wait()
				}
				if w.deletes {
					assert.EqualValues(t, 2, up.loads.Load(), "after a Delete the next call loads again, once")
				} else {
					assert.EqualValues(t, 1, up.loads.Load(), "after a Set, no reload")
				}
			})
		})
	}
}

// TestLostLeaseNeverOverwritesANewerValue: a holder whose lease expired (its
// keep-alive failed: a network partition) and whose key was then loaded by
// another flight never writes its older result over the newer one.
func TestLostLeaseNeverOverwritesANewerValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		fs := storetest.NewFaultyStore(mem)
		opts := &rt.Options[int, product]{Namespace: "product", Lock: rt.LockOptions{TTL: time.Second}}
		a, b := newCache(t, fs, opts), newCache(t, mem, opts)
		up := &db{delay: 3 * time.Second}
		up.price.Store(10)
		got := make(chan product)
		go func() {
			p, _ := a.GetOrLoad(context.Background(), 1, up.load)
			got <- p
		}()
		synctest.Wait()
		// a is cut off from the store: its keep-alives fail, its lease lapses.
		fs.Inject(storetest.OpCompareAndSwap, storetest.Fault{Times: 3}) // at 1/3, 2/3 and 3/3 of its TTL
		time.Sleep(1500 * time.Millisecond)
		up.price.Store(20)
		up.delay = 0
		p, err := b.GetOrLoad(context.Background(), 1, up.load) // b takes the freed key
		require.NoError(t, err)
		assert.Equal(t, 20, p.Price)
		fs.Heal()
		assert.Equal(t, 10, (<-got).Price)
		synctest.Wait()
		r, err := b.Fetch(context.Background(), 1, up.load)
		require.NoError(t, err)
		assert.Equal(t, 20, r.Value.Price, "a's late write-back lost: its lease was gone")
	})
}

// TestStoreRoundTripsPerMiss: on a store with only the generic capabilities
// (Get, SetIfAbsent, CompareAndSwap: memstore, Momento) an uncontended miss
// costs at most three round trips, and a hit one. (It used to cost five:
// get, lock, re-check, set, release.)
func TestStoreRoundTripsPerMiss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache[string, string](t, fs, &rt.Options[string, string]{NegativeTTL: time.Minute})
		_, _ = c.GetOrLoad(context.Background(), "warm-up", echo) // learns the wrapper has no GetOrSet
		synctest.Wait()
		count := func(f func()) int {
			fs.ResetCalls()
			f()
			synctest.Wait()
			return fs.TotalCalls()
		}
		assert.Equal(t, 3, count(func() { _, _ = c.GetOrLoad(context.Background(), "k", echo) }), "miss")
		assert.Equal(t, 1, count(func() { _, _ = c.GetOrLoad(context.Background(), "k", echo) }), "hit")
		assert.Equal(t, 3, count(func() {
			_, _ = c.GetOrLoad(context.Background(), "gone", func(context.Context, string) (string, error) { return "", rt.ErrNotFound })
		}), "miss on a missing key")
		assert.Equal(t, 1, count(func() { _, _ = c.GetOrLoad(context.Background(), "gone", echo) }), "negative hit")
		for _, op := range []storetest.Op{storetest.OpGet, storetest.OpSetIfAbsent, storetest.OpCompareAndSwap} {
			t.Logf("%s: %d", op, fs.Calls(op))
		}
	})
}

// TestOldReleaseProcessesShareTheStore: during a rolling upgrade, processes
// of the previous release (a separate "\x00lock:" key, plain writes, no
// lease in the value key) share the store with this one. Neither corrupts
// the other's entries: an old process sees a lease entry as a miss and
// overwrites it with its value (a second load meanwhile, at worst); this
// one reads what old processes write as a miss once, and overwrites it.
func TestOldReleaseProcessesShareTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		c := newCache[string, string](t, mem, &rt.Options[string, string]{Namespace: "n"})
		// An old process wrote an entry in the previous layout (no check
		// extension): 24-byte header, then the raw string.
		old := make([]byte, 24, 24+8)
		old[0], old[1], old[2] = 0xD7, 1, 1
		now := uint64(time.Now().Add(time.Hour).UnixNano())
		for i := range 8 {
			old[16+i] = byte(now >> (56 - 8*i))
		}
		old = append(old, "old-form"...)
		require.NoError(t, mem.Set(context.Background(), "n:k", old, time.Hour))
		require.NoError(t, mem.Set(context.Background(), "\x00lock:n:k", []byte("an old process's lock"), time.Hour))
		l := countLoads(echo)
		v, err := c.GetOrLoad(context.Background(), "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, "value of k", v, "an old entry is a clean miss, never misread")
		synctest.Wait()
		v, err = c.GetOrLoad(context.Background(), "k", l.load)
		require.NoError(t, err)
		assert.Equal(t, "value of k", v)
		assert.Equal(t, 1, l.n(), "and overwritten once")
		_, ok, _ := mem.Get(context.Background(), "\x00lock:n:k")
		assert.True(t, ok, "an old process's lock key is never touched")
	})
}
