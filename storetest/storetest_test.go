package storetest_test

import (
	"github.com/readthrough-go/readthrough/store"
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFaultyStoreWithoutFaultsPassesTheSuite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) readthrough.Store { return storetest.NewFaultyStore(memstore.New()) })
}

// plain hides memstore's optional interfaces.
type plain struct{ readthrough.Store }

func TestSuiteOverAStoreWithoutOptionalInterfaces(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) readthrough.Store { return plain{memstore.New()} })
}

func TestFaultsPerOperation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	fs := storetest.NewFaultyStore(memstore.New())
	require.NoError(t, fs.Set(ctx, "k", []byte("v"), time.Minute))

	custom := errors.New("connection reset")
	fs.Inject(storetest.OpGet, storetest.Fault{Err: custom})
	_, _, err := fs.Get(ctx, "k")
	assert.ErrorIs(t, err, custom)
	_, err = fs.SetIfAbsent(ctx, "k2", []byte("v"), time.Minute)
	assert.NoError(t, err, "other operations are unaffected")

	fs.Inject(storetest.OpDelete, storetest.Fault{}) // zero Fault: ErrInjected
	assert.ErrorIs(t, fs.Delete(ctx, "k"), storetest.ErrInjected)

	fs.Heal()
	v, ok, err := fs.Get(ctx, "k")
	require.NoError(t, err)
	assert.True(t, ok, "the failed Delete deleted nothing")
	assert.Equal(t, "v", string(v))

	assert.Equal(t, 2, fs.Calls(storetest.OpGet))
	assert.Equal(t, 1, fs.Calls(storetest.OpDelete))
	assert.Equal(t, 5, fs.TotalCalls())
	fs.ResetCalls()
	assert.Zero(t, fs.TotalCalls())
}

func TestDelayHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		fs.Inject(storetest.OpSet, storetest.Fault{Delay: time.Second})
		start := time.Now()
		require.NoError(t, fs.Set(context.Background(), "k", []byte("v"), time.Minute))
		assert.Equal(t, time.Second, time.Since(start), "a delay without Err slows the call, which then succeeds")

		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		assert.ErrorIs(t, fs.Set(ctx, "k", []byte("v"), time.Minute), context.DeadlineExceeded)
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}

func TestCompareAndDeleteUnsupportedWhenWrappedStoreLacksIt(t *testing.T) {
	t.Parallel()
	fs := storetest.NewFaultyStore(plain{memstore.New()})
	_, err := fs.CompareAndDelete(t.Context(), "k", []byte("v"))
	assert.ErrorIs(t, err, errors.ErrUnsupported)
	assert.Equal(t, store.Limits{}, fs.Limits())
}

func TestLimitsPassThrough(t *testing.T) {
	t.Parallel()
	fs := storetest.NewFaultyStore(memstore.New(memstore.WithMaxBytes(1000)))
	assert.Equal(t, 1000, fs.Limits().MaxEntrySize)
}
