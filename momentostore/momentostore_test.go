package momentostore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/momentohq/client-sdk-go/momento"
	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/momentostore"
	"github.com/readthrough-go/readthrough/momentostore/internal/fakemomento"
	"github.com/readthrough-go/readthrough/store"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
)

// TestConformance runs the suite over stores made by Connect, with a peer
// (another store with clients of its own, as another process would have)
// for the notification tests.
func TestConformance(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	storetest.RunWithOptions(t,
		func(t *testing.T) readthrough.Store { return connect(t, srv, nil) },
		storetest.Options{NewPeer: func(t *testing.T, _ readthrough.Store) readthrough.Store { return connect(t, srv, nil) }},
	)
}

func TestConformanceOverNew(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	c := client(t, srv)
	storetest.Run(t, func(*testing.T) readthrough.Store { return momentostore.New(c, cacheName) })
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	for _, tc := range []struct {
		code     codes.Code
		want     error
		sdkCode  string
		attempts int // Get's calls: the SDK retries Unavailable and Internal
	}{
		{codes.NotFound, momentostore.ErrCacheNotFound, momento.CacheNotFoundError, 1},
		{codes.Unavailable, momentostore.ErrUnavailable, momento.ServerUnavailableError, 4},
		{codes.Internal, momentostore.ErrUnavailable, momento.InternalServerError, 4},
		{codes.ResourceExhausted, momentostore.ErrLimitExceeded, momento.LimitExceededError, 1},
		{codes.Unauthenticated, momentostore.ErrAuth, momento.AuthenticationError, 1},
		{codes.PermissionDenied, momentostore.ErrAuth, momento.PermissionError, 1},
		{codes.InvalidArgument, nil, momento.InvalidArgumentError, 1}, // no sentinel: the SDK's error as it is
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			defer srv.Heal()
			for _, m := range []string{"Get", "Set", "SetIf", "Delete"} {
				srv.Inject(m, fakemomento.Fault{Code: tc.code})
			}
			srv.ResetCalls()
			ctx := t.Context()
			_, _, errGet := s.Get(ctx, "k")
			assert.Equal(t, tc.attempts, srv.Calls("Get"), "Get attempts")
			errSet := s.Set(ctx, "k", []byte("v"), time.Minute)
			_, errSIA := s.SetIfAbsent(ctx, "k", []byte("v"), time.Minute)
			_, errCAS := s.CompareAndSwap(ctx, "k", []byte("v"), []byte("w"), time.Minute)
			_, errCAD := s.CompareAndDelete(ctx, "k", []byte("v"))
			errDel := s.Delete(ctx, "k")
			assert.Equal(t, 3, srv.Calls("SetIf"), "SetIf is never retried")
			for _, err := range []error{errGet, errSet, errSIA, errCAS, errCAD, errDel} {
				require.Error(t, err)
				if tc.want != nil {
					assert.ErrorIs(t, err, tc.want)
				}
				var me momento.MomentoError
				require.ErrorAs(t, err, &me, "the SDK's error stays reachable")
				assert.Equal(t, tc.sdkCode, me.Code())
			}
		})
	}
}

func TestMissingCacheSaysToCreateIt(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t)
	s := momentostore.New(client(t, srv), "products")
	_, _, err := s.Get(t.Context(), "k")
	require.ErrorIs(t, err, momentostore.ErrCacheNotFound)
	assert.Contains(t, err.Error(), "create it")
}

func TestTTLs(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	ctx := t.Context()
	for _, ttl := range []time.Duration{0, -time.Second, momentostore.MaxTTL + time.Millisecond} {
		assert.ErrorIs(t, s.Set(ctx, "k", []byte("v"), ttl), momentostore.ErrTTL, "ttl %v", ttl)
		_, err := s.SetIfAbsent(ctx, "k", []byte("v"), ttl)
		assert.ErrorIs(t, err, momentostore.ErrTTL, "ttl %v", ttl)
		_, err = s.CompareAndSwap(ctx, "k", []byte("v"), []byte("w"), ttl)
		assert.ErrorIs(t, err, momentostore.ErrTTL, "ttl %v", ttl)
	}
	assert.Zero(t, srv.Calls("Set")+srv.Calls("SetIf"), "refused before they are sent")

	// Rounded up to whole milliseconds, as Limits.TTLGranularity says.
	require.NoError(t, s.Set(ctx, "k", []byte("v"), time.Microsecond))
	assert.Equal(t, time.Millisecond, srv.LastTTL(cacheName, "k"))
	require.NoError(t, s.Set(ctx, "k", []byte("v"), 1500*time.Microsecond))
	assert.Equal(t, 2*time.Millisecond, srv.LastTTL(cacheName, "k"))
	require.NoError(t, s.Set(ctx, "k", []byte("v"), momentostore.MaxTTL))
	assert.Equal(t, momentostore.MaxTTL, srv.LastTTL(cacheName, "k"))

	require.NoError(t, s.Set(ctx, "k", []byte("v"), time.Minute))
	srv.Advance(time.Minute - time.Second)
	_, ok, err := s.Get(ctx, "k")
	require.NoError(t, err)
	assert.True(t, ok, "alive before its TTL")
	srv.Advance(time.Second)
	_, ok, err = s.Get(ctx, "k")
	require.NoError(t, err)
	assert.False(t, ok, "gone after its TTL")
}

func TestEntrySizeLimit(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	key := "k"
	fits := make([]byte, momentostore.MaxEntrySize-len(key))
	require.NoError(t, s.Set(t.Context(), key, fits, time.Minute))
	got, ok, err := s.Get(t.Context(), key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Len(t, got, len(fits))

	err = s.Set(t.Context(), key, append(fits, 0), time.Minute)
	assert.ErrorIs(t, err, momentostore.ErrTooLarge)
	assert.ErrorIs(t, err, store.ErrTooLarge, "the cache counts it as oversize")
	assert.Equal(t, 1, srv.Calls("Set"), "refused before it is sent")
}

func TestNewRejectsTTLsAboveTheStoreLimit(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	_, err := readthrough.New[string, string](s, &readthrough.Options[string, string]{TTL: 48 * time.Hour})
	require.ErrorIs(t, err, readthrough.ErrInvalidOptions)
	assert.Contains(t, err.Error(), "24h")
	_, err = readthrough.New[string, string](s, &readthrough.Options[string, string]{TTL: 24 * time.Hour})
	assert.NoError(t, err)
}

func TestMissingCacheFailsOpen(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t)
	c, err := readthrough.New[string, string](momentostore.New(client(t, srv), "absent"), nil)
	require.NoError(t, err)
	v, err := c.GetOrLoad(t.Context(), "k", func(context.Context, string) (string, error) { return "loaded", nil })
	require.NoError(t, err, "a store error never reaches the caller")
	assert.Equal(t, "loaded", v)
	assert.Positive(t, c.Stats().StoreErrors)
}

func TestSetIfAbsentRetryIsIdempotent(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
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
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	ctx := t.Context()
	ok, err := s.SetIfAbsent(ctx, "lock", []byte("mine"), 5*time.Second)
	require.NoError(t, err)
	require.True(t, ok)

	released, err := s.CompareAndDelete(ctx, "lock", []byte("not mine"))
	require.NoError(t, err)
	assert.False(t, released)
	assert.Equal(t, 5*time.Second, srv.LastTTL(cacheName, "lock"), "another's token leaves the lock alone")

	released, err = s.CompareAndDelete(ctx, "lock", []byte("mine"))
	require.NoError(t, err)
	assert.True(t, released)
	srv.Advance(time.Millisecond)
	ok, err = s.SetIfAbsent(ctx, "lock", []byte("next"), 5*time.Second)
	require.NoError(t, err)
	assert.True(t, ok, "free a millisecond after release")
}

// TestStampede: four processes (stores, each with its own clients) over
// one Momento cache, eight callers each, one cold key: one load.
func TestStampede(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	var loads atomic.Int32
	load := func(ctx context.Context, k string) (string, error) {
		loads.Add(1)
		time.Sleep(200 * time.Millisecond) // a slow upstream, so the others wait
		return strings.ToUpper(k), nil
	}
	var wg sync.WaitGroup
	for range 4 {
		c, err := readthrough.New[string, string](connect(t, srv, nil), nil)
		require.NoError(t, err)
		for range 8 {
			wg.Go(func() {
				v, err := c.GetOrLoad(context.Background(), "k", load)
				assert.NoError(t, err)
				assert.Equal(t, "K", v)
			})
		}
	}
	wg.Wait()
	assert.EqualValues(t, 1, loads.Load())
}

func TestCancelledContext(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := s.Get(ctx, "k")
	assert.True(t, errors.Is(err, context.Canceled))
}
