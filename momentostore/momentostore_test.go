package momentostore_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/momentohq/client-sdk-go/momento"
	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/momentostore"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConformanceOnTheFake(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) readthrough.Store {
		return momentostore.New(newFake("c"), "c")
	})
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code string
		want error
	}{
		{momento.CacheNotFoundError, momentostore.ErrCacheNotFound},
		{momento.TimeoutError, momentostore.ErrUnavailable},
		{momento.ServerUnavailableError, momentostore.ErrUnavailable},
		{momento.ConnectionError, momentostore.ErrUnavailable},
		{momento.InternalServerError, momentostore.ErrUnavailable},
		{momento.LimitExceededError, momentostore.ErrLimitExceeded},
		{momento.AuthenticationError, momentostore.ErrAuth},
		{momento.PermissionError, momentostore.ErrAuth},
		{momento.InvalidArgumentError, nil}, // no sentinel: the SDK's error as it is
	} {
		t.Run(tc.code, func(t *testing.T) {
			f := newFake("c")
			s := momentostore.New(f, "c")
			original := momento.NewMomentoError(tc.code, "injected", nil)
			for _, op := range []string{"Get", "Set", "SetIfAbsentOrEqual", "SetIfEqual", "Delete"} {
				f.failWith(op, original)
			}
			ctx := t.Context()
			_, _, errGet := s.Get(ctx, "k")
			errSet := s.Set(ctx, "k", []byte("v"), time.Minute)
			_, errSIA := s.SetIfAbsent(ctx, "k", []byte("v"), time.Minute)
			_, errCAD := s.CompareAndDelete(ctx, "k", []byte("v"))
			errDel := s.Delete(ctx, "k")
			for _, err := range []error{errGet, errSet, errSIA, errCAD, errDel} {
				require.Error(t, err)
				if tc.want != nil {
					assert.ErrorIs(t, err, tc.want)
				}
				var me momento.MomentoError
				require.ErrorAs(t, err, &me, "the SDK's error stays reachable")
				assert.Equal(t, tc.code, me.Code())
			}
		})
	}
}

func TestMissingCacheSaysToCreateIt(t *testing.T) {
	t.Parallel()
	s := momentostore.New(newFake(), "products")
	_, _, err := s.Get(t.Context(), "k")
	require.ErrorIs(t, err, momentostore.ErrCacheNotFound)
	assert.Contains(t, err.Error(), "create it")
}

func TestMissingCacheFailsOpen(t *testing.T) {
	t.Parallel()
	c, err := readthrough.New[string, string](momentostore.New(newFake(), "absent"), nil)
	require.NoError(t, err)
	v, err := c.GetOrLoad(t.Context(), "k", func(context.Context, string) (string, error) { return "loaded", nil })
	require.NoError(t, err, "a store error never reaches the caller")
	assert.Equal(t, "loaded", v)
	assert.Positive(t, c.Stats().StoreErrors)
}

func TestTTLRange(t *testing.T) {
	t.Parallel()
	f := newFake("c")
	s := momentostore.New(f, "c")
	for _, ttl := range []time.Duration{0, -time.Second, time.Microsecond, momentostore.MaxTTL + time.Millisecond} {
		assert.ErrorIs(t, s.Set(t.Context(), "k", []byte("v"), ttl), momentostore.ErrTTL, "ttl %v", ttl)
		_, err := s.SetIfAbsent(t.Context(), "k", []byte("v"), ttl)
		assert.ErrorIs(t, err, momentostore.ErrTTL, "ttl %v", ttl)
	}
	require.NoError(t, s.Set(t.Context(), "k", []byte("v"), 1500*time.Microsecond))
	assert.Equal(t, 2*time.Millisecond, f.lastTTL("k"), "rounded up to whole milliseconds")
	require.NoError(t, s.Set(t.Context(), "k", []byte("v"), momentostore.MaxTTL))
	assert.Equal(t, momentostore.MaxTTL, f.lastTTL("k"))
}

func TestNewRejectsTTLsAboveTheStoreLimit(t *testing.T) {
	t.Parallel()
	s := momentostore.New(newFake("c"), "c")
	_, err := readthrough.New[string, string](s, &readthrough.Options[string, string]{TTL: 48 * time.Hour})
	require.ErrorIs(t, err, readthrough.ErrInvalidOptions)
	assert.Contains(t, err.Error(), "24h")
	_, err = readthrough.New[string, string](s, &readthrough.Options[string, string]{TTL: 24 * time.Hour})
	assert.NoError(t, err)
}

func TestOversizeValueIsServedNotCached(t *testing.T) {
	t.Parallel()
	f := newFake("c")
	c, err := readthrough.New[string, []byte](momentostore.New(f, "c"), nil)
	require.NoError(t, err)
	var loads atomic.Int32
	big := func(context.Context, string) ([]byte, error) {
		loads.Add(1)
		return make([]byte, momentostore.MaxValueSize), nil
	}
	for range 2 {
		v, err := c.GetOrLoad(t.Context(), "k", big)
		require.NoError(t, err)
		assert.Len(t, v, momentostore.MaxValueSize)
	}
	assert.EqualValues(t, 2, loads.Load(), "not cached, so loaded each time")
	assert.EqualValues(t, 2, c.Stats().Oversize)
	assert.Zero(t, c.Stats().StoreErrors, "caught before the service refused it")
}

func TestSetIfAbsentRetryIsIdempotent(t *testing.T) {
	t.Parallel()
	s := momentostore.New(newFake("c"), "c")
	ok, err := s.SetIfAbsent(t.Context(), "lock", []byte("token-a"), time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = s.SetIfAbsent(t.Context(), "lock", []byte("token-a"), time.Minute)
	require.NoError(t, err)
	assert.True(t, ok, "the same flight retrying its acquisition still holds the lock")
	ok, err = s.SetIfAbsent(t.Context(), "lock", []byte("token-b"), time.Minute)
	require.NoError(t, err)
	assert.False(t, ok, "another flight does not")
}

func TestReleaseExpiresTheLockWithinAMillisecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake("c")
		s := momentostore.New(f, "c")
		ctx := context.Background()
		ok, err := s.SetIfAbsent(ctx, "lock", []byte("mine"), 5*time.Second)
		require.NoError(t, err)
		require.True(t, ok)

		released, err := s.CompareAndDelete(ctx, "lock", []byte("not mine"))
		require.NoError(t, err)
		assert.False(t, released)
		assert.Equal(t, 5*time.Second, f.lastTTL("lock"), "another's token leaves the lock alone")

		released, err = s.CompareAndDelete(ctx, "lock", []byte("mine"))
		require.NoError(t, err)
		assert.True(t, released)
		assert.Equal(t, time.Millisecond, f.lastTTL("lock"))
		time.Sleep(time.Millisecond)
		ok, err = s.SetIfAbsent(ctx, "lock", []byte("next"), 5*time.Second)
		require.NoError(t, err)
		assert.True(t, ok, "free a millisecond after release")
	})
}

func TestStampedeOverTheFake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake("c")
		var loads atomic.Int32
		load := func(ctx context.Context, k string) (string, error) {
			loads.Add(1)
			time.Sleep(200 * time.Millisecond)
			return strings.ToUpper(k), nil
		}
		done := make(chan struct{})
		for range 4 { // four processes sharing one Momento cache
			c, err := readthrough.New[string, string](momentostore.New(f, "c"), nil)
			require.NoError(t, err)
			for range 8 {
				go func() {
					v, err := c.GetOrLoad(context.Background(), "k", load)
					assert.NoError(t, err)
					assert.Equal(t, "K", v)
					done <- struct{}{}
				}()
			}
		}
		for range 32 {
			<-done
		}
		assert.EqualValues(t, 1, loads.Load())
	})
}

func TestOpenWithoutCredentials(t *testing.T) {
	t.Setenv("MOMENTO_API_KEY", "")
	t.Setenv("MOMENTO_ENDPOINT", "")
	_, err := momentostore.Open(t.Context(), "c", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "MOMENTO_API_KEY")
}

func TestCancelledContext(t *testing.T) {
	t.Parallel()
	s := momentostore.New(newFake("c"), "c")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := s.Get(ctx, "k")
	assert.True(t, errors.Is(err, context.Canceled))
}
