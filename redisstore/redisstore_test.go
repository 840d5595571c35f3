package redisstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	storetest.Run(t, func(*testing.T) readthrough.Store { return redisstore.New(rdb) })
}

func TestTTLBelowAMillisecondIsRejected(t *testing.T) {
	srv := redistest.Start(t)
	s := redisstore.New(srv.Client(t))
	for _, ttl := range []time.Duration{0, -1, time.Microsecond, time.Millisecond - 1} {
		assert.ErrorIs(t, s.Set(t.Context(), "k", []byte("v"), ttl), redisstore.ErrTTL, "Set ttl %v", ttl)
		_, err := s.SetIfAbsent(t.Context(), "k", []byte("v"), ttl)
		assert.ErrorIs(t, err, redisstore.ErrTTL, "SetIfAbsent ttl %v", ttl)
	}
	_, ok, err := s.Get(t.Context(), "k")
	require.NoError(t, err)
	assert.False(t, ok, "nothing was written, least of all without expiry")
}

func TestTTLIsSetInMilliseconds(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	s := redisstore.New(rdb)
	require.NoError(t, s.Set(t.Context(), "k", []byte("v"), 90*time.Second+1500*time.Microsecond))
	pttl, err := rdb.PTTL(t.Context(), "k").Result()
	require.NoError(t, err)
	assert.Greater(t, pttl, 89*time.Second, "the TTL reached the server")
	assert.LessOrEqual(t, pttl, 90*time.Second+2*time.Millisecond)
	ok, err := s.SetIfAbsent(t.Context(), "lock", []byte("t"), 5*time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	pttl, err = rdb.PTTL(t.Context(), "lock").Result()
	require.NoError(t, err)
	assert.Greater(t, pttl, 4*time.Second)
	assert.LessOrEqual(t, pttl, 5*time.Second)
}

func TestCompareAndDeleteSurvivesScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	s := redisstore.New(rdb)
	ctx := t.Context()
	for range 2 {
		// The server forgets its scripts (a restart, a failover, SCRIPT FLUSH):
		// EVALSHA answers NOSCRIPT and the store falls back to EVAL.
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		require.NoError(t, s.Set(ctx, "lock", []byte("tok"), time.Minute))
		deleted, err := s.CompareAndDelete(ctx, "lock", []byte("other"))
		require.NoError(t, err)
		assert.False(t, deleted)
		deleted, err = s.CompareAndDelete(ctx, "lock", []byte("tok"))
		require.NoError(t, err)
		assert.True(t, deleted)
	}
}

func TestServerDownIsAnError(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rdb.Close()
	srv.Stop()
	s := redisstore.New(rdb)
	_, ok, err := s.Get(t.Context(), "k")
	assert.Error(t, err, "an unreachable server is an error, not a miss")
	assert.False(t, ok)
}

func TestCacheOverRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	c, err := readthrough.New[int, string](redisstore.New(rdb), &readthrough.Options[int, string]{
		Namespace:   "product",
		NegativeTTL: time.Minute,
	})
	require.NoError(t, err)
	ctx := t.Context()
	var loads int
	load := func(ctx context.Context, id int) (string, error) {
		loads++
		if id == 0 {
			return "", readthrough.ErrNotFound
		}
		return fmt.Sprintf("product %d", id), nil
	}
	for range 3 {
		v, err := c.GetOrLoad(ctx, 42, load)
		require.NoError(t, err)
		assert.Equal(t, "product 42", v)
		_, err = c.GetOrLoad(ctx, 0, load)
		assert.ErrorIs(t, err, readthrough.ErrNotFound)
	}
	assert.Equal(t, 2, loads)
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"product:42", "product:0"}, keys, "values only: every lock was released")
}

// TestOutage stops the server in the middle of a run of concurrent calls
// and starts it again on the same port. No caller sees an error; hits come
// back after the restart.
func TestOutage(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{
		Addr: srv.Addr, MaxRetries: -1,
		DialTimeout: 100 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
	})
	defer rdb.Close()
	c, err := readthrough.New[int, string](redisstore.New(rdb), &readthrough.Options[int, string]{
		Namespace: "outage", StoreTimeout: 300 * time.Millisecond,
	})
	require.NoError(t, err)
	load := func(ctx context.Context, id int) (string, error) { return fmt.Sprint("v", id), nil }

	phase := func(name string, calls int) {
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for i := range calls {
					id := (g*calls + i) % 10
					v, err := c.GetOrLoad(context.Background(), id, load)
					if err != nil || v != fmt.Sprint("v", id) {
						t.Errorf("%s: GetOrLoad(%d) = %q, %v", name, id, v, err)
						return
					}
				}
			})
		}
		wg.Wait()
	}

	phase("up", 50)
	up := c.Stats()
	assert.Zero(t, up.StoreErrors)
	assert.Greater(t, up.Hits, uint64(0))

	srv.Stop()
	phase("down", 20)
	down := c.Stats()
	assert.Greater(t, down.StoreErrors, up.StoreErrors, "the outage was seen, and counted")
	assert.Greater(t, down.Loads, up.Loads, "and the loader served the calls")

	srv.Restart(t)
	phase("restarted", 50)
	back := c.Stats()
	assert.Greater(t, back.Hits, down.Hits, "hits resume after the restart")
}
