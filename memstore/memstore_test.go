package memstore_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) readthrough.Store { return memstore.New() })
}

func TestConformanceBounded(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) readthrough.Store {
		return memstore.New(memstore.WithMaxEntries(1000), memstore.WithMaxBytes(4<<20))
	})
}

func TestExpiryFollowsTheBubbleClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		ctx := context.Background()
		require.NoError(t, s.Set(ctx, "k", []byte("v"), 10*time.Second))

		time.Sleep(10*time.Second - time.Nanosecond)
		_, ok, err := s.Get(ctx, "k")
		require.NoError(t, err)
		assert.True(t, ok, "entry must live until its TTL")

		time.Sleep(time.Nanosecond)
		_, ok, err = s.Get(ctx, "k")
		require.NoError(t, err)
		assert.False(t, ok, "entry must be gone at its TTL")
		assert.Zero(t, s.Len())
	})
}

func TestRejectsNonPositiveTTL(t *testing.T) {
	s := memstore.New()
	for _, ttl := range []time.Duration{0, -time.Second} {
		assert.Error(t, s.Set(t.Context(), "k", []byte("v"), ttl), "Set with ttl %v", ttl)
		_, err := s.SetIfAbsent(t.Context(), "k", []byte("v"), ttl)
		assert.Error(t, err, "SetIfAbsent with ttl %v", ttl)
	}
	assert.Zero(t, s.Len(), "a rejected write stores nothing")
}

func TestMaxEntriesEvictsLeastRecentlyUsed(t *testing.T) {
	s := memstore.New(memstore.WithMaxEntries(3))
	ctx := t.Context()
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, s.Set(ctx, k, []byte(k), time.Minute))
	}
	_, ok, _ := s.Get(ctx, "a") // a is now the most recently used; b the least
	require.True(t, ok)
	require.NoError(t, s.Set(ctx, "d", []byte("d"), time.Minute))
	assert.Equal(t, []string{"a", "c", "d"}, s.Keys())
}

func TestMaxBytesEvictsAndRefusesOversize(t *testing.T) {
	s := memstore.New(memstore.WithMaxBytes(100))
	ctx := t.Context()
	assert.Equal(t, 100, s.Limits().MaxEntrySize)
	for i := range 5 {
		// 2-byte key + 30-byte value = 32 bytes: three fit in 100.
		require.NoError(t, s.Set(ctx, fmt.Sprintf("k%d", i), make([]byte, 30), time.Minute))
	}
	assert.Equal(t, []string{"k2", "k3", "k4"}, s.Keys())
	assert.Error(t, s.Set(ctx, "big", make([]byte, 101), time.Minute))
	assert.Equal(t, []string{"k2", "k3", "k4"}, s.Keys(), "a refused write evicts nothing")
}

func TestWritesSweepExpiredEntries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		ctx := context.Background()
		for i := range 1000 {
			require.NoError(t, s.Set(ctx, fmt.Sprintf("old%d", i), []byte("v"), time.Second))
		}
		time.Sleep(2 * time.Second)
		// Nobody reads the old keys again; new writes must still reclaim them.
		for i := range 2000 {
			require.NoError(t, s.Set(ctx, fmt.Sprintf("new%d", i%10), []byte("v"), time.Hour))
		}
		assert.Equal(t, 10, s.Len())
		assert.Less(t, s.Size(), 1000*len("old000v"), "expired entries were not swept")
	})
}

func TestCompareAndDeleteIgnoresExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := memstore.New()
		ctx := context.Background()
		require.NoError(t, s.Set(ctx, "lock", []byte("tok"), time.Second))
		time.Sleep(time.Second)
		deleted, err := s.CompareAndDelete(ctx, "lock", []byte("tok"))
		require.NoError(t, err)
		assert.False(t, deleted, "an expired entry is absent")
	})
}
