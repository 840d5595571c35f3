package momentostore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/momentostore"
	"github.com/readthrough-go/readthrough/momentostore/internal/fakemomento"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
)

// connectAsync runs Connect and fails the test if it does not return
// within failsafe: what the SDK's own 30 s eager-connection timer would
// exceed only if the test ran slow, so a pass shows ctx was honoured.
func connectAsync(t *testing.T, ctx context.Context, addr string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		s, err := momentostore.Connect(ctx, cacheName, fakemomento.CredentialsFor(addr), nil)
		if s != nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(failsafe):
		t.Fatal("Connect did not return when its context ended")
		return nil
	}
}

func TestConnectHonoursTheDeadline(t *testing.T) {
	t.Parallel()
	addr, _ := fakemomento.Silent(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	err := connectAsync(t, ctx, addr)
	t.Logf("Connect to a silent endpoint with a 1s deadline returned after %v", time.Since(start))
	require.ErrorIs(t, err, context.DeadlineExceeded, "ctx's error, not the SDK's")
}

func TestConnectHonoursCancellation(t *testing.T) {
	t.Parallel()
	addr, accepted := fakemomento.Silent(t)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-accepted // Connect is waiting on the handshake
		cancel()
	}()
	err := connectAsync(t, ctx, addr)
	require.ErrorIs(t, err, context.Canceled)
}

func TestConnectRefused(t *testing.T) {
	t.Parallel()
	addr := fakemomento.RefusedAddr(t)
	t.Run("with a deadline", func(t *testing.T) { // the SDK's eager connection fails
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		assert.ErrorIs(t, connectAsync(t, ctx, addr), momentostore.ErrUnavailable)
	})
	t.Run("without", func(t *testing.T) { // the probe fails
		assert.ErrorIs(t, connectAsync(t, context.Background(), addr), momentostore.ErrUnavailable)
	})
}

func TestConnectCreatesAMissingCache(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t)
	connect(t, srv, nil)
	assert.True(t, srv.HasCache(cacheName))
	assert.Equal(t, 1, srv.Calls("CreateCache"))
}

func TestConnectCacheCreatedMeanwhile(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t)
	// Another process creates it between the probe and CreateCache.
	srv.Inject("Get", fakemomento.Fault{Code: codes.NotFound}) // as for a missing cache
	srv.CreateCache(cacheName)
	connect(t, srv, nil)
	assert.Equal(t, 1, srv.Calls("CreateCache"), "AlreadyExists is success")
}

// TestFleetStartMakesNoControlPlaneCalls: the control plane allows about
// five calls per second per region; twenty processes starting together
// against an existing cache must make none.
func TestFleetStartMakesNoControlPlaneCalls(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			s, err := momentostore.Connect(t.Context(), cacheName, srv.Credentials(), nil)
			if assert.NoError(t, err) {
				s.Close()
			}
		})
	}
	wg.Wait()
	assert.Zero(t, srv.ControlCalls())
	assert.GreaterOrEqual(t, srv.Calls("Get"), 20, "a data-plane probe each (a slow one is tried again)")
}

func TestConnectWithoutTopics(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	s := connect(t, srv, &momentostore.Options{NoTopics: true})
	require.NoError(t, s.Set(t.Context(), "k", []byte("v"), time.Minute))
	s.Close()
	assert.Zero(t, srv.Calls("Publish"))
}

func TestOpenWithoutCredentials(t *testing.T) {
	t.Setenv("MOMENTO_API_KEY", "")
	t.Setenv("MOMENTO_ENDPOINT", "")
	_, err := momentostore.Open(t.Context(), "c", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "MOMENTO_API_KEY")
}
