package redisstore_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/readthrough-go/readthrough/store"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCluster runs the store on a real 3-node Redis Cluster: a key's lease
// lives in the key itself, and every operation touches one key (a batch is
// split by node), so nothing ever crosses a slot.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster; -short skips it")
	}
	addrs := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = rdb.Close() })

	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(*testing.T) readthrough.Store { return redisstore.New(rdb) })
	})

	t.Run("Stampede", func(t *testing.T) {
		var loads atomic.Int32
		load := func(ctx context.Context, id int) (string, error) {
			loads.Add(1)
			time.Sleep(100 * time.Millisecond)
			return fmt.Sprint("v", id), nil
		}
		const procs, keys = 4, 12 // keys spread over the three nodes
		caches := make([]*readthrough.Cache[int, string], procs)
		for i := range caches {
			// Each "process" has its own cluster client, as separate services would.
			own := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
			t.Cleanup(func() { _ = own.Close() })
			c, err := readthrough.New[int, string](redisstore.New(own), &readthrough.Options[int, string]{Namespace: "cluster"})
			require.NoError(t, err)
			caches[i] = c
		}
		var wg sync.WaitGroup
		for _, c := range caches {
			for id := range keys {
				for range 4 {
					wg.Go(func() {
						v, err := c.GetOrLoad(context.Background(), id, load)
						assert.NoError(t, err)
						assert.Equal(t, fmt.Sprint("v", id), v)
					})
				}
			}
		}
		wg.Wait()
		assert.EqualValues(t, keys, loads.Load(), "one load per key across %d clients of the cluster", procs)
	})

	t.Run("Capabilities", func(t *testing.T) {
		testClusterCapabilities(t, rdb)
	})
}

// testClusterCapabilities runs the optional capabilities on keys spread
// over every node: scripts in any slot, pipelines split by node, and
// scripts a node forgot.
func testClusterCapabilities(t *testing.T, rdb *redis.ClusterClient) {
	s := redisstore.New(rdb)
	ctx := t.Context()

	cur, stored, err := s.GetOrSet(ctx, "cap:gos", []byte("lease"), time.Minute)
	require.NoError(t, err)
	assert.True(t, stored)
	assert.Nil(t, cur)
	cur, stored, err = s.GetOrSet(ctx, "cap:gos", []byte("other"), time.Minute)
	require.NoError(t, err)
	assert.False(t, stored)
	assert.Equal(t, "lease", string(cur))

	large := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	for i := range 6 { // keys in several slots, on every node
		key := fmt.Sprint("cap:cas:", i)
		require.NoError(t, s.Set(ctx, key, large, time.Minute))
		swapped, err := s.CompareAndSwap(ctx, key, large, []byte("new"), time.Minute)
		require.NoError(t, err)
		assert.True(t, swapped, key)
		swapped, err = s.CompareAndSwap(ctx, key, large, []byte("newer"), time.Minute)
		require.NoError(t, err)
		assert.False(t, swapped, key)
	}

	for round := range 2 {
		if round == 1 {
			// Every node forgets its scripts: the batch sends those ops
			// again by EVAL.
			require.NoError(t, rdb.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
				return node.ScriptFlush(ctx).Err()
			}))
		}
		prefix := fmt.Sprint("cap:batch:", round, ":")
		var ops []store.Op
		for i := range 60 {
			k := fmt.Sprint(prefix, i)
			ops = append(ops,
				store.Op{Kind: store.OpSet, Key: k + ":set", Value: []byte("s"), TTL: time.Minute},
				store.Op{Kind: store.OpSetIfAbsent, Key: k + ":sia", Value: []byte("a"), TTL: time.Minute},
				store.Op{Kind: store.OpGetOrSet, Key: k + ":gos", Value: []byte("g"), TTL: time.Minute},
				store.Op{Kind: store.OpGet, Key: k + ":miss"},
			)
		}
		require.NoError(t, s.Batch(ctx, ops))
		for _, op := range ops {
			require.NoError(t, op.Err, "%v %s", op.Kind, op.Key)
			stored := op.Kind == store.OpSetIfAbsent || op.Kind == store.OpGetOrSet
			assert.Equal(t, stored, op.OK, "%v %s", op.Kind, op.Key)
		}
		// Read back, and swap, in a second batch.
		var check []store.Op
		for i := range 60 {
			k := fmt.Sprint(prefix, i)
			check = append(check,
				store.Op{Kind: store.OpGet, Key: k + ":set"},
				store.Op{Kind: store.OpCompareAndSwap, Key: k + ":sia", Old: []byte("a"), Value: []byte("b"), TTL: time.Minute},
				store.Op{Kind: store.OpCompareAndSwap, Key: k + ":gos", Old: []byte("x"), Value: []byte("b"), TTL: time.Minute},
				store.Op{Kind: store.OpDelete, Key: k + ":set"},
			)
		}
		require.NoError(t, s.Batch(ctx, check))
		for i, op := range check {
			require.NoError(t, op.Err, "%v %s", op.Kind, op.Key)
			switch i % 4 {
			case 0:
				assert.True(t, op.OK, op.Key)
				assert.Equal(t, "s", string(op.Result), op.Key)
			case 1:
				assert.True(t, op.OK, "%s swapped", op.Key)
			case 2:
				assert.False(t, op.OK, "%s held another value", op.Key)
			}
		}
		for i := range 60 {
			k := fmt.Sprint(prefix, i)
			got, err := rdb.Get(ctx, k+":sia").Result()
			require.NoError(t, err)
			assert.Equal(t, "b", got)
			n, err := rdb.Exists(ctx, k+":set").Result()
			require.NoError(t, err)
			assert.Zero(t, n, "deleted")
		}
	}
}
