package redisstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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

// TestCluster runs the store on a real 3-node Redis Cluster: value keys and
// their lock keys hash to different slots, on different nodes, and every
// operation touches one key, so nothing crosses a slot.
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
}
