package redistest_test

import (
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCountCommands(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	cnt := redistest.CountCommands(rdb)
	ctx := t.Context()

	require.NoError(t, rdb.Set(ctx, "k", "v", time.Minute).Err())
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Get(ctx, "k")
		p.Get(ctx, "k")
		p.Del(ctx, "other")
		return nil
	})
	require.NoError(t, err)
	got := cnt.Snapshot()
	assert.Equal(t, 2, got.RoundTrips, "a command, then a pipeline")
	assert.Equal(t, map[string]int{"set": 1, "get": 2, "del": 1}, got.Commands)
	assert.Positive(t, got.Setup, "the connections' handshakes, apart")

	got.Commands["get"] = 100
	assert.Equal(t, 2, cnt.Snapshot().Commands["get"], "a snapshot is the caller's")

	cnt.Reset()
	assert.Equal(t, redistest.Counts{Commands: map[string]int{}}, cnt.Snapshot())
	require.NoError(t, rdb.Get(ctx, "k").Err())
	assert.Equal(t, redistest.Counts{RoundTrips: 1, Commands: map[string]int{"get": 1}}, cnt.Snapshot(),
		"the pooled connection is reused: no set-up")
}
