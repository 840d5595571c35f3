package redisstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
)

// TestMissesAfterAMissAreNotStuck: on a store that notifies, the lease a
// read takes for this flight changes the key (the notification of our own
// write reaches the link); the flight must not mistake it for another's
// and wait on itself. (A miss on a second key used to hang until its
// caller's deadline.)
func TestMissesAfterAMissAreNotStuck(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	c, err := readthrough.New[int, string](redisstore.New(rdb), &readthrough.Options[int, string]{Namespace: "x", Near: readthrough.NearOptions{MaxEntries: 100}})
	assert.NoError(t, err)
	defer c.Close()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for k := range 20 {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, err := c.Fetch(ctx, k, func(context.Context, int) (string, error) { time.Sleep(10 * time.Millisecond); return "v", nil })
				assert.NoError(t, err, "key %d", k)
				cancel()
			}
		})
	}
	wg.Wait()
	assert.EqualValues(t, 20, c.Stats().Loads)
}
