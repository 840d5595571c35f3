package storetest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/store"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFaultyStoreWithoutFaultsPassesTheSuite(t *testing.T) {
	t.Parallel()
	inner := map[readthrough.Store]*memstore.Store{}
	storetest.RunWithOptions(t, func(*testing.T) readthrough.Store {
		m := memstore.New()
		fs := storetest.NewFaultyStore(m)
		inner[fs] = m
		return fs
	}, storetest.Options{
		// Another FaultyStore over the same memstore: another client.
		NewPeer: func(_ *testing.T, s readthrough.Store) readthrough.Store {
			return storetest.NewFaultyStore(inner[s])
		},
	})
}

func TestSuiteOverAStoreWithoutOptionalInterfaces(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) readthrough.Store { return storetest.Plain(memstore.New()) })
}

// getOrSetStore adds store.GetOrSetter to a memstore, so the suite's
// GetOrSet tests, and FaultyStore's forwarding of it, have a store to run on.
type getOrSetStore struct{ *memstore.Store }

// GetOrSet is SetIfAbsent, then Get when that did not store: atomic, since
// the Get's answer was the key's value at the moment of the Get, and a Get
// that misses (the key was deleted in between) tries again.
func (s getOrSetStore) GetOrSet(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	for {
		stored, err := s.SetIfAbsent(ctx, key, value, ttl)
		if err != nil || stored {
			return nil, stored, err
		}
		cur, ok, err := s.Get(ctx, key)
		if err != nil || ok {
			return cur, false, err
		}
	}
}

// Batch adds GetOrSet to memstore's.
func (s getOrSetStore) Batch(ctx context.Context, ops []store.Op) error {
	if err := s.Store.Batch(ctx, ops); err != nil {
		return err
	}
	for i := range ops {
		if op := &ops[i]; op.Kind == store.OpGetOrSet {
			op.Result, op.OK, op.Err = s.GetOrSet(ctx, op.Key, op.Value, op.TTL)
		}
	}
	return nil
}

func TestSuiteOverAStoreWithGetOrSet(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) readthrough.Store { return getOrSetStore{memstore.New()} })
}

func TestSuiteOverAFaultyStoreWithGetOrSet(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) readthrough.Store {
		return storetest.NewFaultyStore(getOrSetStore{memstore.New()})
	})
}

func TestPlainHidesEveryCapability(t *testing.T) {
	t.Parallel()
	var s any = storetest.Plain(memstore.New())
	for name, has := range map[string]bool{
		"CompareAndSwapper": is[store.CompareAndSwapper](s),
		"GetOrSetter":       is[store.GetOrSetter](s),
		"CompareAndDeleter": is[store.CompareAndDeleter](s),
		"Notifier":          is[store.Notifier](s),
		"Batcher":           is[store.Batcher](s),
		"Limiter":           is[store.Limiter](s),
		"NonBlocking":       is[store.NonBlocking](s),
	} {
		assert.False(t, has, "Plain exposes %s", name)
	}
	ps := s.(readthrough.Store)
	require.NoError(t, ps.Set(t.Context(), "k", []byte("v"), time.Minute))
	v, ok, err := ps.Get(t.Context(), "k")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "v", string(v), "the four methods go through")
}

func is[T any](v any) bool { _, ok := v.(T); return ok }

func TestFaultyStoreHasEveryCapabilityButNonBlocking(t *testing.T) {
	t.Parallel()
	var s any = storetest.NewFaultyStore(memstore.New())
	assert.True(t, is[store.CompareAndSwapper](s))
	assert.True(t, is[store.GetOrSetter](s))
	assert.True(t, is[store.CompareAndDeleter](s))
	assert.True(t, is[store.Notifier](s))
	assert.True(t, is[store.Batcher](s))
	assert.True(t, is[store.Limiter](s))
	assert.False(t, is[store.NonBlocking](s), "a FaultyStore can delay: the cache must bound its calls")
}

func TestCapabilitiesUnsupportedWhenWrappedStoreLacksThem(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	fs := storetest.NewFaultyStore(storetest.Plain(memstore.New()))
	_, err := fs.CompareAndDelete(ctx, "k", []byte("v"))
	assert.ErrorIs(t, err, errors.ErrUnsupported, "CompareAndDelete")
	_, err = fs.CompareAndSwap(ctx, "k", []byte("v"), []byte("w"), time.Minute)
	assert.ErrorIs(t, err, errors.ErrUnsupported, "CompareAndSwap")
	_, _, err = fs.GetOrSet(ctx, "k", []byte("v"), time.Minute)
	assert.ErrorIs(t, err, errors.ErrUnsupported, "GetOrSet")
	assert.ErrorIs(t, fs.Batch(ctx, []store.Op{{Kind: store.OpGet, Key: "k"}}), errors.ErrUnsupported, "Batch")
	_, err = fs.Notify("", nopListener{})
	assert.ErrorIs(t, err, errors.ErrUnsupported, "Notify")
	assert.Equal(t, store.Limits{}, fs.Limits())
	for _, op := range []storetest.Op{storetest.OpCompareAndDelete, storetest.OpCompareAndSwap,
		storetest.OpGetOrSet, storetest.OpBatch, storetest.OpNotify} {
		assert.Equal(t, 1, fs.Calls(op), "%s is counted even when unsupported", op)
	}
}

type nopListener struct{}

func (nopListener) Connected(bool)     {}
func (nopListener) Changed(string)     {}
func (nopListener) Disconnected(error) {}

func TestLimitsPassThrough(t *testing.T) {
	t.Parallel()
	fs := storetest.NewFaultyStore(memstore.New(memstore.WithMaxBytes(1000)))
	assert.Equal(t, 1000, fs.Limits().MaxEntrySize)
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

// every calls each method of fs once, and returns the error of each.
func every(ctx context.Context, fs *storetest.FaultyStore) map[storetest.Op]error {
	errs := map[storetest.Op]error{}
	_, _, errs[storetest.OpGet] = fs.Get(ctx, "k")
	errs[storetest.OpSet] = fs.Set(ctx, "k", []byte("v"), time.Minute)
	_, errs[storetest.OpSetIfAbsent] = fs.SetIfAbsent(ctx, "k", []byte("v"), time.Minute)
	errs[storetest.OpDelete] = fs.Delete(ctx, "k")
	_, errs[storetest.OpCompareAndDelete] = fs.CompareAndDelete(ctx, "k", []byte("v"))
	_, _, errs[storetest.OpGetOrSet] = fs.GetOrSet(ctx, "k", []byte("v"), time.Minute)
	_, errs[storetest.OpCompareAndSwap] = fs.CompareAndSwap(ctx, "k", []byte("v"), []byte("w"), time.Minute)
	errs[storetest.OpBatch] = fs.Batch(ctx, []store.Op{{Kind: store.OpGet, Key: "k"}})
	stop, err := fs.Notify("", nopListener{})
	if err == nil {
		stop()
	}
	errs[storetest.OpNotify] = err
	return errs
}

func TestEveryOperationIsCountedAndFaultable(t *testing.T) {
	t.Parallel()
	fs := storetest.NewFaultyStore(getOrSetStore{memstore.New()})
	for op, err := range every(t.Context(), fs) {
		assert.NoError(t, err, "%s without a fault", op)
		assert.Equal(t, 1, fs.Calls(op), "%s is counted", op)
	}
	assert.Equal(t, 9, fs.TotalCalls())

	fs.InjectAll(storetest.Fault{})
	for op, err := range every(t.Context(), fs) {
		assert.ErrorIs(t, err, storetest.ErrInjected, "InjectAll reaches %s", op)
	}
	fs.Heal()
	for op, err := range every(t.Context(), fs) {
		assert.NoError(t, err, "%s after Heal", op)
		assert.Equal(t, 3, fs.Calls(op), "%s", op)
	}
}
