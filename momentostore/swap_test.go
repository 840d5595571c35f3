package momentostore_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/momentostore"
	"github.com/readthrough-go/readthrough/momentostore/internal/fakemomento"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
)

func TestCompareAndSwap(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	ctx := t.Context()

	swapped, err := s.CompareAndSwap(ctx, "k", []byte("a"), []byte("b"), time.Minute)
	require.NoError(t, err)
	assert.False(t, swapped, "a missing key never matches")

	require.NoError(t, s.Set(ctx, "k", []byte("a"), time.Minute))
	swapped, err = s.CompareAndSwap(ctx, "k", []byte("x"), []byte("b"), time.Minute)
	require.NoError(t, err)
	assert.False(t, swapped, "another value does not match")
	v, _, _ := srv.Item(cacheName, "k")
	assert.Equal(t, "a", string(v))

	swapped, err = s.CompareAndSwap(ctx, "k", []byte("a"), []byte("b"), time.Hour)
	require.NoError(t, err)
	assert.True(t, swapped)
	v, _, _ = srv.Item(cacheName, "k")
	assert.Equal(t, "b", string(v))
	assert.Equal(t, time.Hour, srv.LastTTL(cacheName, "k"), "the swap sets the TTL it was given")

	// A lease kept alive: swapped for itself with a new TTL.
	swapped, err = s.CompareAndSwap(ctx, "k", []byte("b"), []byte("b"), 2*time.Hour)
	require.NoError(t, err)
	assert.True(t, swapped)
	assert.Equal(t, 2*time.Hour, srv.LastTTL(cacheName, "k"))

	assert.Equal(t, 4, srv.Calls("SetIf"), "one SetIf per swap")
	assert.Zero(t, srv.Calls("GetWithHash")+srv.Calls("SetIfHash"), "small values need no hash")
	assert.Zero(t, srv.Calls("/cache_client.Scs/UpdateTtl"), "UpdateTtl does not check the value")

	srv.Advance(3 * time.Hour)
	swapped, err = s.CompareAndSwap(ctx, "k", []byte("b"), []byte("c"), time.Minute)
	require.NoError(t, err)
	assert.False(t, swapped, "an expired key never matches")
}

// TestCompareAndSwapLargeValues: old and new together exceed a gRPC
// message, so the store compares locally and swaps on the hash.
func TestCompareAndSwapLargeValues(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	ctx := t.Context()
	old := bytes.Repeat([]byte("o"), 4<<20)
	next := bytes.Repeat([]byte("n"), 4<<20)
	require.NoError(t, s.Set(ctx, "k", old, time.Minute))

	swapped, err := s.CompareAndSwap(ctx, "k", next, old, time.Minute)
	require.NoError(t, err)
	assert.False(t, swapped, "a different value of the same size does not match")
	assert.Equal(t, 1, srv.Calls("GetWithHash"))
	assert.Zero(t, srv.Calls("SetIfHash"), "refused on the local comparison")

	swapped, err = s.CompareAndSwap(ctx, "k", old, next, time.Hour)
	require.NoError(t, err)
	assert.True(t, swapped)
	v, _, _ := srv.Item(cacheName, "k")
	assert.True(t, bytes.Equal(next, v))
	assert.Equal(t, time.Hour, srv.LastTTL(cacheName, "k"))
	assert.Equal(t, 2, srv.Calls("GetWithHash"))
	assert.Equal(t, 1, srv.Calls("SetIfHash"))
	assert.Zero(t, srv.Calls("SetIf"), "SetIfEqual would carry 8 MB")

	// A release of a large value takes the same path.
	deleted, err := s.CompareAndDelete(ctx, "k", next)
	require.NoError(t, err)
	assert.True(t, deleted)
	srv.Advance(time.Millisecond)
	_, ok, err := s.Get(ctx, "k")
	require.NoError(t, err)
	assert.False(t, ok)
}

// TestSetIfTimeoutIsAnError: the SDK never retries SetIf, so a lost reply
// leaves the outcome unknown, and the store says so.
func TestSetIfTimeoutIsAnError(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	require.NoError(t, s.Set(t.Context(), "k", []byte("a"), time.Minute))

	srv.Inject("SetIf", fakemomento.Fault{Hang: true})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := s.CompareAndSwap(ctx, "k", []byte("a"), []byte("b"), time.Minute)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, 1, srv.Calls("SetIf"))

	srv.Inject("SetIf", fakemomento.Fault{Code: codes.Unavailable})
	_, err = s.CompareAndSwap(t.Context(), "k", []byte("a"), []byte("b"), time.Minute)
	require.ErrorIs(t, err, momentostore.ErrUnavailable)
	assert.Equal(t, 2, srv.Calls("SetIf"), "not retried even on UNAVAILABLE")
}
