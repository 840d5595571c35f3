package redisstore_test

// The cache's promises on a real redis-server, with the client built the
// way README shows (go-redis defaults: context deadlines never reach its
// sockets, commands are retried), through redistest.Proxy where the
// network misbehaves.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/readthrough-go/readthrough/store"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeClient is the client README.md builds: every option at its default.
func readmeClient(t *testing.T, addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func newRedisCache(t *testing.T, st readthrough.Store, o *readthrough.Options[string, string]) *readthrough.Cache[string, string] {
	t.Helper()
	c, err := readthrough.New(st, o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// quiet hides a store's notifications, so round-trip counts see only the
// data path (the notification link's heartbeat goes through the client's
// hooks too).
type quiet struct{ *redisstore.Store }

func (quiet) Notify(string, store.Listener) (func(), error) { return nil, errors.ErrUnsupported }

// TestBlackholedRedisCostsOneStoreTimeout: with README's client, a Redis
// that accepts bytes and answers nothing used to cost 5 s per store call
// (go-redis's own read timeout), and 3 calls per request. Every caller now
// returns within StoreTimeout plus a little, served by the loader.
func TestBlackholedRedisCostsOneStoreTimeout(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	c := newRedisCache(t, redisstore.New(readmeClient(t, proxy.Addr)), &readthrough.Options[string, string]{
		Namespace: "bh", StoreTimeout: 100 * time.Millisecond,
	})
	_, err := c.GetOrLoad(t.Context(), "warm", echo) // connections up
	require.NoError(t, err)
	proxy.Blackhole(true)
	var wg sync.WaitGroup
	var slowest atomic.Int64
	for i := range 20 {
		wg.Go(func() {
			start := time.Now()
			v, err := c.GetOrLoad(t.Context(), fmt.Sprint("k", i), echo)
			took := time.Since(start)
			assert.NoError(t, err)
			assert.Equal(t, fmt.Sprintf("value of k%d", i), v)
			for old := slowest.Load(); int64(took) > old && !slowest.CompareAndSwap(old, int64(took)); old = slowest.Load() {
			}
		})
	}
	wg.Wait()
	t.Logf("slowest caller during the blackhole: %v", time.Duration(slowest.Load()))
	assert.Less(t, time.Duration(slowest.Load()), time.Second, "bounded by StoreTimeout (100ms), not go-redis's 5s")
	assert.Positive(t, c.Stats().StoreErrors)
	proxy.Blackhole(false)
}

// TestLostLeaseReplyIsNotWaitedOn: the reply to the lease's SET NX is lost
// after Redis applied it; go-redis retries on a new connection. The retry
// used to find our own token and report false, and the caller polled its
// own lock for Lock.MaxWait (5s). SET NX GET returns our token: ours.
func TestLostLeaseReplyIsNotWaitedOn(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	c := newRedisCache(t, redisstore.New(readmeClient(t, proxy.Addr)), &readthrough.Options[string, string]{Namespace: "lost"})
	_, _ = c.GetOrLoad(t.Context(), "warm", echo)
	proxy.LoseNextReply(func(args []string) bool {
		return len(args) > 1 && args[0] == "set" && args[1] == "lost:k" && slices.Contains(args, "nx")
	})
	var loads atomic.Int32
	start := time.Now()
	r, err := c.Fetch(t.Context(), "k", func(ctx context.Context, k string) (string, error) {
		loads.Add(1)
		return echo(ctx, k)
	})
	require.NoError(t, err)
	took := time.Since(start)
	t.Logf("call with a lost lease reply: %v, source %v", took, r.Source)
	assert.EqualValues(t, 1, loads.Load())
	assert.Less(t, took, time.Second, "no wait on our own lease")
	assert.Zero(t, c.Stats().LockWaits)
}

// TestCutShortEntryOnRedisIsRepaired: an entry cut short in Redis (a raw
// string entry loses its last 20 bytes) is a miss, reloaded, and the
// entry repaired.
func TestCutShortEntryOnRedisIsRepaired(t *testing.T) {
	srv := redistest.Start(t)
	raw := srv.Client(t)
	c := newRedisCache(t, redisstore.New(readmeClient(t, srv.Addr)), &readthrough.Options[string, string]{Namespace: "cut"})
	long := strings.Repeat("payload ", 10)
	var loads atomic.Int32
	load := func(context.Context, string) (string, error) { loads.Add(1); return long, nil }
	_, err := c.GetOrLoad(t.Context(), "k", load)
	require.NoError(t, err)
	require.Eventually(t, func() bool { b, _ := raw.Get(t.Context(), "cut:k").Bytes(); return len(b) > len(long) }, 5*time.Second, time.Millisecond)
	b, err := raw.Get(t.Context(), "cut:k").Bytes()
	require.NoError(t, err)
	require.NoError(t, raw.Set(t.Context(), "cut:k", b[:len(b)-20], time.Hour).Err())
	v, err := c.GetOrLoad(t.Context(), "k", load)
	require.NoError(t, err)
	assert.Equal(t, long, v, "never the cut value")
	assert.EqualValues(t, 2, loads.Load())
	require.Eventually(t, func() bool {
		r, err := c.Fetch(t.Context(), "k", load)
		return err == nil && r.Source == readthrough.SourceCache && r.Value == long
	}, 5*time.Second, 10*time.Millisecond, "repaired")
}

// TestRedisRoundTrips: a hit costs one round trip (SET NX GET), an
// uncontended miss two (the get-or-lease, then the compare-and-swap of the
// entry); a 100-key batch of cached keys one, with misses two. Counted
// with a go-redis hook.
func TestRedisRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	rdb := readmeClient(t, srv.Addr)
	counter := redistest.CountCommands(rdb)
	c, err := readthrough.New[int, string](quiet{redisstore.New(rdb)}, &readthrough.Options[int, string]{Namespace: "rt"})
	require.NoError(t, err)
	defer c.Close()
	one := func(ctx context.Context, id int) (string, error) { return fmt.Sprint(id), nil }
	many := func(ctx context.Context, ids []int) (map[int]string, error) {
		m := map[int]string{}
		for _, id := range ids {
			m[id] = fmt.Sprint(id)
		}
		return m, nil
	}
	trips := func(f func()) int {
		_, _ = c.GetOrLoad(t.Context(), -1, one) // connections up, scripts loaded
		time.Sleep(50 * time.Millisecond)        // and its write-back done
		counter.Reset()
		f()
		time.Sleep(50 * time.Millisecond) // the write-back after the answer
		s := counter.Snapshot()
		t.Logf("commands %v", s.Commands)
		return s.RoundTrips
	}
	assert.Equal(t, 2, trips(func() { _, _ = c.GetOrLoad(t.Context(), 1, one) }), "miss")
	assert.Equal(t, 1, trips(func() { _, _ = c.GetOrLoad(t.Context(), 1, one) }), "hit")
	keys := make([]int, 100)
	for i := range keys {
		keys[i] = 1000 + i
	}
	assert.Equal(t, 2, trips(func() {
		m, err := c.GetOrLoadMany(t.Context(), keys, many)
		assert.NoError(t, err)
		assert.Len(t, m, 100)
	}), "a batch of 100 misses: get-or-lease, then compare-and-swap")
	assert.Equal(t, 1, trips(func() {
		m, err := c.GetOrLoadMany(t.Context(), keys, many)
		assert.NoError(t, err)
		assert.Len(t, m, 100)
	}), "a batch of 100 cached keys")
}

// TestNearCacheOnRedis: a Cache with a near cache over redisstore, and a
// writer that is not a Cache (a script's raw SET and DEL, an expiry), a
// killed notification connection, a server restart: no copy outlives a
// change it was told about, and a lost link drops every copy.
func TestNearCacheOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	raw := srv.Client(t)
	c := newRedisCache(t, redisstore.New(readmeClient(t, srv.Addr)), &readthrough.Options[string, string]{
		Namespace: "near", TTL: time.Hour, Near: readthrough.NearOptions{MaxEntries: 100},
	})
	var version atomic.Int32
	load := func(context.Context, string) (string, error) { return fmt.Sprint("v", version.Load()), nil }
	copyOf := func(key string) {
		t.Helper()
		require.Eventually(t, func() bool {
			r, err := c.Fetch(t.Context(), key, load)
			return err == nil && r.Source == readthrough.SourceNear
		}, 5*time.Second, time.Millisecond, "a near copy of %s", key)
	}
	// untilChanged fetches until the copy is gone, and says how long that took.
	untilChanged := func(key string) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < 5*time.Second {
			if r, err := c.Fetch(t.Context(), key, load); err == nil && r.Source != readthrough.SourceNear {
				return time.Since(start)
			}
			time.Sleep(50 * time.Microsecond)
		}
		t.Fatalf("the near copy of %s outlived the change by 5s", key)
		return 0
	}

	copyOf("a")
	version.Add(1)
	require.NoError(t, raw.Set(t.Context(), "near:a", "written by a script", time.Hour).Err())
	t.Logf("raw SET → copy evicted in %v", untilChanged("a"))
	r, err := c.Fetch(t.Context(), "a", load)
	require.NoError(t, err)
	assert.Equal(t, "v1", r.Value, "the script's bytes are not an entry: reloaded")

	copyOf("b")
	require.NoError(t, raw.Del(t.Context(), "near:b").Err())
	t.Logf("raw DEL → copy evicted in %v", untilChanged("b"))

	// Kill the notification connections: every copy is dropped.
	copyOf("c")
	flushes := c.Stats().NearFlushes
	killed := killNotifyConns(t, raw)
	require.Positive(t, killed)
	require.Eventually(t, func() bool { return c.Stats().NearFlushes > flushes }, 5*time.Second, time.Millisecond, "flushed on CLIENT KILL")
	copyOf("c") // rebuilt, once the link is back
	version.Add(1)
	require.NoError(t, raw.Del(t.Context(), "near:c").Err())
	untilChanged("c") // and told of changes again

	// A restart (the data is gone): flushed, then served afresh.
	copyOf("d")
	flushes = c.Stats().NearFlushes
	srv.Restart(t)
	require.Eventually(t, func() bool { return c.Stats().NearFlushes > flushes }, 10*time.Second, time.Millisecond, "flushed on restart")
	version.Add(1)
	require.Eventually(t, func() bool {
		r, err := c.Fetch(t.Context(), "d", load)
		return err == nil && r.Value == fmt.Sprint("v", version.Load())
	}, 10*time.Second, 10*time.Millisecond, "served afresh after the restart")
}

// killNotifyConns kills the notification link's connections and reports
// how many there were.
func killNotifyConns(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	list, err := rdb.ClientList(t.Context()).Result()
	require.NoError(t, err)
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, "name=readthrough-notify-") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				require.NoError(t, rdb.Do(t.Context(), "client", "kill", "id", id).Err())
				n++
			}
		}
	}
	return n
}

// TestNearCopyNeverOutlivesItsTTLOnRedis: a copy is served up to its
// entry's fresh-until, never after, whatever notifications say.
func TestNearCopyNeverOutlivesItsTTLOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	c := newRedisCache(t, redisstore.New(readmeClient(t, srv.Addr)), &readthrough.Options[string, string]{
		Namespace: "ttl", TTL: 300 * time.Millisecond, Near: readthrough.NearOptions{MaxEntries: 100},
	})
	load := func(context.Context, string) (string, error) { return "v", nil }
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		called := time.Now()
		r, err := c.Fetch(t.Context(), "k", load)
		require.NoError(t, err)
		if r.Source == readthrough.SourceNear {
			require.True(t, called.Before(r.Expires), "a near copy served past its fresh-until (%v > %v)", called, r.Expires)
			require.Less(t, r.Age, 300*time.Millisecond, "older than its TTL")
		}
	}
	assert.Positive(t, c.Stats().NearHits)
}

// TestInvalidationWinsOnRedis: a Set, a Delete, or a raw SET or DEL by a
// writer that is not a Cache, made while another Cache (its own client) is
// loading the key, wins: that load never overwrites it.
func TestInvalidationWinsOnRedis(t *testing.T) {
	for _, w := range []struct {
		name   string
		write  func(t *testing.T, other *readthrough.Cache[string, string], raw *redis.Client)
		reload bool
	}{
		{"Set", func(t *testing.T, other *readthrough.Cache[string, string], _ *redis.Client) {
			require.NoError(t, other.Set(t.Context(), "k", "new"))
		}, false},
		{"Delete", func(t *testing.T, other *readthrough.Cache[string, string], _ *redis.Client) {
			require.NoError(t, other.Delete(t.Context(), "k"))
		}, true},
		{"raw DEL", func(t *testing.T, _ *readthrough.Cache[string, string], raw *redis.Client) {
			require.NoError(t, raw.Del(t.Context(), "inv:k").Err())
		}, true},
	} {
		t.Run(w.name, func(t *testing.T) {
			srv := redistest.Start(t)
			raw := srv.Client(t)
			opts := &readthrough.Options[string, string]{Namespace: "inv"}
			loader := newRedisCache(t, redisstore.New(readmeClient(t, srv.Addr)), opts)
			other := newRedisCache(t, redisstore.New(readmeClient(t, srv.Addr)), opts)
			started := make(chan struct{})
			var loads atomic.Int32
			got := make(chan string)
			go func() {
				v, _ := loader.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) {
					loads.Add(1)
					close(started)
					time.Sleep(300 * time.Millisecond)
					return "old", nil
				})
				got <- v
			}()
			<-started
			w.write(t, other, raw)
			assert.Equal(t, "old", <-got, "the load's callers get what it loaded")
			time.Sleep(100 * time.Millisecond) // its write-back, refused
			r, err := other.Fetch(t.Context(), "k", func(context.Context, string) (string, error) {
				loads.Add(1)
				return "new", nil
			})
			require.NoError(t, err)
			assert.Equal(t, "new", r.Value, "never the value loaded before the write")
			if w.reload {
				assert.EqualValues(t, 2, loads.Load(), "loaded again after the Delete")
			} else {
				assert.Equal(t, readthrough.SourceCache, r.Source, "the Set stands, no reload")
			}
		})
	}
}

func echo(_ context.Context, k string) (string, error) { return "value of " + k, nil }

// TestLoaderKeepsItsOwnWriteAsANearCopy: the process that loads a key keeps
// the value it wrote as its near copy (no read to make it), and the echo of
// its own write from Redis does not evict it; a later write by anyone does.
func TestLoaderKeepsItsOwnWriteAsANearCopy(t *testing.T) {
	srv := redistest.Start(t)
	raw := srv.Client(t)
	c := newRedisCache(t, redisstore.New(readmeClient(t, srv.Addr)), &readthrough.Options[string, string]{
		Namespace: "own", TTL: time.Hour, Near: readthrough.NearOptions{MaxEntries: 1000},
	})
	_, _ = c.GetOrLoad(t.Context(), "warm", echo) // the link is up
	require.Eventually(t, func() bool {
		r, _ := c.Fetch(t.Context(), "warm", echo)
		return r.Source == readthrough.SourceNear
	}, 5*time.Second, time.Millisecond)
	near := 0
	const n = 50
	for i := range n {
		k := fmt.Sprint("k", i)
		_, err := c.GetOrLoad(t.Context(), k, echo)
		require.NoError(t, err)
		time.Sleep(5 * time.Millisecond) // the echo of the write arrives
		if r, _ := c.Fetch(t.Context(), k, echo); r.Source == readthrough.SourceNear {
			near++
		}
	}
	t.Logf("%d of %d loads kept as near copies", near, n)
	assert.GreaterOrEqual(t, near, n*8/10, "the loader's own write kept, its echo let pass")
	// A later write, by anyone, still evicts.
	require.NoError(t, raw.Del(t.Context(), "own:k0").Err())
	require.Eventually(t, func() bool {
		r, _ := c.Fetch(t.Context(), "k0", func(context.Context, string) (string, error) { return "reloaded", nil })
		return r.Value == "reloaded"
	}, 5*time.Second, time.Millisecond, "a DEL after the echo evicts the kept copy")
}
