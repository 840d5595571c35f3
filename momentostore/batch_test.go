package momentostore_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/momentostore"
	"github.com/readthrough-go/readthrough/momentostore/internal/fakemomento"
	"github.com/readthrough-go/readthrough/store"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
)

func TestBatchRoundTrip(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	ctx := t.Context()

	sets := make([]store.Op, 100)
	for i := range sets {
		ttl := time.Minute
		if i%2 == 1 {
			ttl = time.Hour
		}
		sets[i] = store.Op{Kind: store.OpSet, Key: fmt.Sprint("k", i), Value: []byte(fmt.Sprint("v", i)), TTL: ttl}
	}
	require.NoError(t, s.Batch(ctx, sets))
	for _, op := range sets {
		require.NoError(t, op.Err)
	}
	assert.Equal(t, 2, srv.Calls("SetBatch"), "one SetBatch per TTL")
	assert.Zero(t, srv.Calls("Set"))
	assert.Equal(t, time.Hour, srv.LastTTL(cacheName, "k1"), "each op's TTL")
	assert.Equal(t, time.Minute, srv.LastTTL(cacheName, "k2"))

	gets := make([]store.Op, 101)
	for i := range gets {
		gets[i] = store.Op{Kind: store.OpGet, Key: fmt.Sprint("k", i)}
	}
	require.NoError(t, s.Batch(ctx, gets))
	for i, op := range gets[:100] {
		require.NoError(t, op.Err)
		assert.True(t, op.OK)
		assert.Equal(t, fmt.Sprint("v", i), string(op.Result))
	}
	assert.False(t, gets[100].OK, "a miss")
	assert.Nil(t, gets[100].Result)
	assert.Equal(t, 1, srv.Calls("GetBatch"), "a batch of Gets is one RPC")
	assert.Equal(t, 1, srv.Calls("Get"), "no single Gets: the one is Connect's probe")
	assert.Empty(t, srv.ReadConcern("GetBatch"), "GetBatch carries no read concern")
	_, _, err := s.Get(ctx, "k0")
	require.NoError(t, err)
	assert.Equal(t, "consistent", srv.ReadConcern("Get"))
}

func TestBatchMixed(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	ctx := t.Context()
	require.NoError(t, s.Set(ctx, "held", []byte("old"), time.Minute))
	require.NoError(t, s.Set(ctx, "gone", []byte("x"), time.Minute))

	ops := []store.Op{
		{Kind: store.OpSetIfAbsent, Key: "new", Value: []byte("n"), TTL: time.Minute},
		{Kind: store.OpSetIfAbsent, Key: "held", Value: []byte("n"), TTL: time.Minute},
		{Kind: store.OpCompareAndSwap, Key: "held", Old: []byte("old"), Value: []byte("swapped"), TTL: time.Minute},
		{Kind: store.OpDelete, Key: "gone"},
		{Kind: store.OpGetOrSet, Key: "x", Value: []byte("v"), TTL: time.Minute},
		{Kind: store.OpSet, Key: "big", Value: make([]byte, momentostore.MaxEntrySize), TTL: time.Minute},
		{Kind: store.OpSet, Key: "ttl", Value: []byte("v"), TTL: 0},
	}
	require.NoError(t, s.Batch(ctx, ops))
	assert.True(t, ops[0].OK)
	assert.NoError(t, ops[0].Err)
	assert.False(t, ops[1].OK)
	assert.NoError(t, ops[1].Err)
	assert.True(t, ops[2].OK)
	assert.NoError(t, ops[3].Err)
	assert.ErrorIs(t, ops[4].Err, errors.ErrUnsupported, "no GetOrSetter")
	assert.ErrorIs(t, ops[5].Err, store.ErrTooLarge)
	assert.ErrorIs(t, ops[6].Err, momentostore.ErrTTL)
	v, _, _ := srv.Item(cacheName, "held")
	assert.Equal(t, "swapped", string(v))
	_, _, ok := srv.Item(cacheName, "gone")
	assert.False(t, ok)
	assert.Zero(t, srv.Calls("SetBatch"), "the invalid Sets were never sent")
}

// TestBatchSplitsSetsUnderTheMessageLimit: three 2 MB values with one TTL
// need two SetBatch requests of at most 5,243,000 bytes each.
func TestBatchSplitsSetsUnderTheMessageLimit(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	ops := make([]store.Op, 3)
	for i := range ops {
		ops[i] = store.Op{Kind: store.OpSet, Key: fmt.Sprint("k", i), Value: bytes.Repeat([]byte{byte('a' + i)}, 2<<20), TTL: time.Minute}
	}
	require.NoError(t, s.Batch(t.Context(), ops))
	for _, op := range ops {
		require.NoError(t, op.Err)
	}
	assert.Equal(t, 2, srv.Calls("SetBatch"))
	for i := range ops {
		v, _, ok := srv.Item(cacheName, fmt.Sprint("k", i))
		require.True(t, ok)
		assert.True(t, bytes.Equal(ops[i].Value, v))
	}
}

// TestBatchFailuresArePerOp: GetBatch fails as a whole (and is not
// retried on UNAVAILABLE); the Sets beside it still land.
func TestBatchFailuresArePerOp(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	srv.Inject("GetBatch", fakemomento.Fault{Code: codes.Unavailable})
	ops := []store.Op{
		{Kind: store.OpGet, Key: "a"},
		{Kind: store.OpGet, Key: "b"},
		{Kind: store.OpSet, Key: "c", Value: []byte("v"), TTL: time.Minute},
	}
	require.NoError(t, s.Batch(t.Context(), ops))
	assert.ErrorIs(t, ops[0].Err, momentostore.ErrUnavailable)
	assert.ErrorIs(t, ops[1].Err, momentostore.ErrUnavailable)
	assert.NoError(t, ops[2].Err)
	assert.Equal(t, 1, srv.Calls("GetBatch"), "streaming RPCs are not retried")
	_, _, ok := srv.Item(cacheName, "c")
	assert.True(t, ok)

	// A stream that breaks part way fails every Get of the request.
	srv.Inject("GetBatch", fakemomento.Fault{Code: codes.Unavailable, After: 1})
	require.NoError(t, s.Batch(t.Context(), ops[:2]))
	assert.ErrorIs(t, ops[0].Err, momentostore.ErrUnavailable)
	assert.ErrorIs(t, ops[1].Err, momentostore.ErrUnavailable)
}
