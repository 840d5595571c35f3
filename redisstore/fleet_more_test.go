package redisstore_test

// More tests across real processes: a near cache in every worker told of a
// writer that is not a Cache; an invalidation made while another process
// loads; overlapping batches.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nearReader reads one key in a loop through a near cache until told to
// stop, and reports, for each version the test writes (as raw bytes of an
// entry it takes from another Cache), how long after the write it first
// saw it.
func nearReader(ctx context.Context, rdb *redis.Client, rep *workerReport) {
	c, err := readthrough.New[string, string](redisstore.New(rdb), &readthrough.Options[string, string]{
		Namespace: env("RUN"), TTL: time.Hour, Near: readthrough.NearOptions{MaxEntries: 100},
	})
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return
	}
	defer c.Close()
	load := func(context.Context, string) (string, error) { return "v0", nil }
	_ = rdb.Incr(ctx, env("RUN")+":ready").Err()
	seen := "v0"
	for {
		r, err := c.Fetch(ctx, "k", load)
		if err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			return
		}
		rep.Sources[r.Source.String()]++
		time.Sleep(100 * time.Microsecond) // a service, not a spin loop: four of these share two cores
		if r.Value != seen {
			seen = r.Value
			at, err := rdb.Get(ctx, env("RUN")+":written:"+seen).Int64()
			if err != nil {
				rep.Errors = append(rep.Errors, "no write time for "+seen)
				return
			}
			rep.Lags = append(rep.Lags, time.Since(time.Unix(0, at)))
			if seen == "stop" {
				return
			}
		}
	}
}

// TestNearCachesAcrossProcessesAreToldOfAForeignWriter: four processes
// serve a key from their near caches; the test writes new versions of it
// with a raw SET (a writer that is not a Cache). Every process sees every
// version, soon; none serves an old copy for long.
func TestNearCachesAcrossProcessesAreToldOfAForeignWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test; -short skips it")
	}
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	run := fmt.Sprintf("nearfleet%d", time.Now().UnixNano())
	vars := map[string]string{"ADDR": srv.Addr, "RUN": run, "LOCK_TTL": "5s", "MAX_WAIT": "5s"}
	const procs, versions = 4, 50
	workers := make([]*worker, procs)
	for i := range workers {
		workers[i] = startWorker(t, "near-reader", vars)
	}
	require.Eventually(t, func() bool { n, _ := rdb.Get(ctx, run+":ready").Int(); return n == procs }, 20*time.Second, time.Millisecond)
	// A writer's entries: made by a Cache of the test's, copied raw.
	writer, err := readthrough.New[string, string](redisstore.New(srv.Client(t)), &readthrough.Options[string, string]{Namespace: run, TTL: time.Hour})
	require.NoError(t, err)
	defer writer.Close()
	for i := 1; i <= versions; i++ {
		v := strconv.Itoa(i)
		if i == versions {
			v = "stop"
		}
		require.NoError(t, writer.Set(ctx, "scratch", v))
		b, err := rdb.Get(ctx, run+":scratch").Bytes()
		require.NoError(t, err)
		require.NoError(t, rdb.Set(ctx, run+":written:"+v, time.Now().UnixNano(), time.Hour).Err())
		require.NoError(t, rdb.Set(ctx, run+":k", b, time.Hour).Err()) // the raw write
		time.Sleep(20 * time.Millisecond)
	}
	var lags []time.Duration
	for _, w := range workers {
		rep := w.wait(t)
		assert.Positive(t, rep.Sources["near"], "served from the near cache")
		lags = append(lags, rep.Lags...)
	}
	require.NotEmpty(t, lags)
	slices.Sort(lags)
	t.Logf("write → seen by a process (%d observations): p50 %v, p99 %v, max %v",
		len(lags), lags[len(lags)/2], lags[len(lags)*99/100], lags[len(lags)-1])
	assert.Less(t, lags[len(lags)-1], time.Second, "no process served an old copy for long")
	assert.GreaterOrEqual(t, len(lags), procs*versions*9/10, "every process saw (almost) every version")
}

// slowLoader loads "k" with a loader that reads the row first, then takes
// 500ms: a load that read the row before the test updates it.
func slowLoader(ctx context.Context, rdb *redis.Client, c *readthrough.Cache[string, string], rep *workerReport) {
	v, err := c.GetOrLoad(ctx, "k", func(ctx context.Context, _ string) (string, error) {
		row, err := rdb.Get(ctx, env("RUN")+":row").Result()
		if err != nil {
			return "", err
		}
		_ = rdb.Incr(ctx, env("RUN")+":loads").Err()
		time.Sleep(500 * time.Millisecond)
		return row, nil
	})
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
	}
	rep.Value = v
}

// TestInvalidationWinsAcrossProcesses: a process loads a key from a row it
// read before the test updated the row and wrote through (Set) or
// invalidated (Delete, or a raw DEL). Its late write-back never lands.
func TestInvalidationWinsAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test; -short skips it")
	}
	for _, how := range []string{"Set", "Delete", "raw DEL"} {
		t.Run(how, func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := srv.Client(t)
			ctx := t.Context()
			run := fmt.Sprintf("inv%d", time.Now().UnixNano())
			require.NoError(t, rdb.Set(ctx, run+":row", "price=10", 0).Err())
			w := startWorker(t, "slow-loader", map[string]string{"ADDR": srv.Addr, "RUN": run, "LOCK_TTL": "5s", "MAX_WAIT": "5s"})
			require.Eventually(t, func() bool { n, _ := rdb.Get(ctx, run+":loads").Int(); return n == 1 }, 20*time.Second, time.Millisecond)
			c, err := readthrough.New[string, string](redisstore.New(srv.Client(t)), &readthrough.Options[string, string]{Namespace: run})
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, rdb.Set(ctx, run+":row", "price=20", 0).Err()) // the update
			switch how {
			case "Set":
				require.NoError(t, c.Set(ctx, "k", "price=20"))
			case "Delete":
				require.NoError(t, c.Delete(ctx, "k"))
			case "raw DEL":
				require.NoError(t, rdb.Del(ctx, run+":k").Err())
			}
			rep := w.wait(t)
			assert.Equal(t, "price=10", rep.Value, "the worker's callers got what it loaded")
			v, err := c.GetOrLoad(ctx, "k", func(ctx context.Context, _ string) (string, error) {
				return rdb.Get(ctx, run+":row").Result()
			})
			require.NoError(t, err)
			assert.Equal(t, "price=20", v, "the late load never overwrote the newer state")
		})
	}
}

// batchWorker asks for overlapping batches of keys, with a loader that
// counts, in Redis, how often each key is loaded.
func batchWorker(ctx context.Context, rdb *redis.Client, rep *workerReport) {
	c, err := readthrough.New[int, string](redisstore.New(rdb), &readthrough.Options[int, string]{Namespace: env("RUN")})
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return
	}
	defer c.Close()
	load := func(ctx context.Context, ids []int) (map[int]string, error) {
		pipe := rdb.Pipeline()
		for _, id := range ids {
			pipe.Incr(ctx, fmt.Sprintf("%s:loads:%d", env("RUN"), id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
		m := map[int]string{}
		for _, id := range ids {
			m[id] = fmt.Sprint("row ", id)
		}
		return m, nil
	}
	if err := redistest.Barrier(ctx, rdb, env("RUN")+":arrive", envInt("PROCS"), 30*time.Second); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := range 4 {
		wg.Go(func() {
			lo := (g * 17) % 50
			ids := make([]int, 0, 50)
			for id := lo; id < lo+50; id++ {
				ids = append(ids, id)
			}
			m, err := c.GetOrLoadMany(ctx, ids, load)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || len(m) != len(ids) {
				rep.Errors = append(rep.Errors, fmt.Sprintf("batch: %d of %d, %v", len(m), len(ids), err))
			}
		})
	}
	wg.Wait()
}

// TestBatchesAcrossProcessesLoadEachKeyOnce: four processes, four
// goroutines each, overlapping 50-key batches over 100 keys at once: every
// key is loaded exactly once.
func TestBatchesAcrossProcessesLoadEachKeyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test; -short skips it")
	}
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	const procs = 4
	run := fmt.Sprintf("batch%d", time.Now().UnixNano())
	vars := map[string]string{"ADDR": srv.Addr, "RUN": run, "PROCS": strconv.Itoa(procs), "LOCK_TTL": "5s", "MAX_WAIT": "5s"}
	workers := make([]*worker, procs)
	for i := range workers {
		workers[i] = startWorker(t, "batch", vars)
	}
	for _, w := range workers {
		w.wait(t)
	}
	keys, err := rdb.Keys(t.Context(), run+":loads:*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	for _, k := range keys {
		n, err := rdb.Get(t.Context(), k).Int()
		require.NoError(t, err)
		assert.Equal(t, 1, n, "%s loaded %d times", strings.TrimPrefix(k, run+":loads:"), n)
	}
	t.Logf("%d distinct keys, each loaded once", len(keys))
}
