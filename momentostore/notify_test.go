package momentostore_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/momentohq/client-sdk-go/config"
	"github.com/momentohq/client-sdk-go/config/logger"
	"github.com/momentohq/client-sdk-go/momento"
	"github.com/readthrough-go/readthrough/momentostore"
	"github.com/readthrough-go/readthrough/momentostore/internal/fakemomento"
	"github.com/readthrough-go/readthrough/store"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
)

// listen registers a recorder on s for prefix and waits until it is
// connected.
func listen(t *testing.T, s *momentostore.Store, prefix string) (*recorder, func()) {
	t.Helper()
	r := newRecorder()
	stop, err := s.Notify(prefix, r)
	require.NoError(t, err)
	t.Cleanup(stop)
	r.next(t, "connected:false") // false: writers that are not stores publish nothing
	return r, stop
}

func count(events []string, e string) int {
	n := 0
	for _, x := range events {
		if x == e {
			n++
		}
	}
	return n
}

func TestNotifyAcrossStores(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	a := connect(t, srv, nil)
	// b is a client passed to NewWithTopics, with a topic client of its own.
	b, err := momentostore.NewWithTopics(client(t, srv), cacheName, srv.Credentials(), nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	rb, _ := listen(t, b, "p:")
	ra, _ := listen(t, a, "")
	ctx := t.Context()

	require.NoError(t, a.Set(ctx, "p:set", []byte("v"), time.Minute))
	ok, err := a.SetIfAbsent(ctx, "p:lock", []byte("t"), time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = a.SetIfAbsent(ctx, "p:lock", []byte("other"), time.Minute)
	require.NoError(t, err)
	require.False(t, ok, "not stored, so nothing changed")
	ok, err = a.CompareAndSwap(ctx, "p:set", []byte("v"), []byte("w"), time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = a.CompareAndDelete(ctx, "p:lock", []byte("t"))
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, a.Delete(ctx, "p:del"))
	require.NoError(t, a.Batch(ctx, []store.Op{
		{Kind: store.OpSet, Key: "p:b1", Value: []byte("1"), TTL: time.Minute},
		{Kind: store.OpSet, Key: "p:b2", Value: []byte("2"), TTL: time.Minute},
		{Kind: store.OpGet, Key: "p:set"},
	}))
	require.NoError(t, a.Set(ctx, "q:other", []byte("v"), time.Minute))
	wantA := []string{"changed:p:set", "changed:p:lock", "changed:p:set", "changed:p:lock",
		"changed:p:del", "changed:p:b1", "changed:p:b2", "changed:q:other"}
	got := ra.all()[1:] // after connected
	slices.Sort(got[5:7])
	assert.Equal(t, wantA, got, "a store's own writes reach its listeners before the calls return")

	// The last write is the barrier: the topic keeps order.
	require.NoError(t, a.Set(ctx, "p:last", []byte("v"), time.Minute))
	seen := rb.next(t, "changed:p:last")
	for _, k := range []string{"p:set", "p:lock", "p:del", "p:b1", "p:b2"} {
		assert.Contains(t, seen, "changed:"+k)
	}
	assert.NotContains(t, seen, "changed:q:other", "outside the listener's prefix")
	assert.NotContains(t, seen, "disconnected")

	// a's own messages come back on its subscription; they are not told
	// twice. b's write, after them on the topic, is the barrier.
	require.NoError(t, b.Set(ctx, "z", []byte("v"), time.Minute))
	ra.next(t, "changed:z")
	assert.Equal(t, 2, count(ra.all(), "changed:p:set"))
	assert.Equal(t, 1, count(ra.all(), "changed:p:last"))
	assert.Positive(t, srv.Calls("Publish"))
	assert.Less(t, srv.Calls("Publish"), 11, "publishes are coalesced, never more than one per write")
}

func TestNotifyDiscontinuity(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	a, b := connect(t, srv, nil), connect(t, srv, nil)
	rb, _ := listen(t, b, "")
	srv.Discontinuity(cacheName, momentostore.Topic, 5)
	assert.Equal(t, []string{"disconnected", "connected:false"}, rb.next(t, "connected:false"))
	require.NoError(t, a.Set(t.Context(), "k", []byte("v"), time.Minute))
	assert.Equal(t, []string{"changed:k"}, rb.next(t, "changed:k"), "the stream still flows")
}

func TestNotifySequenceGap(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	a, b := connect(t, srv, nil), connect(t, srv, nil)
	rb, _ := listen(t, b, "")
	require.NoError(t, a.Set(t.Context(), "k1", []byte("v"), time.Minute))
	rb.next(t, "changed:k1")
	srv.SkipSequence(cacheName, momentostore.Topic, 3)
	require.NoError(t, a.Set(t.Context(), "k2", []byte("v"), time.Minute))
	assert.Equal(t, []string{"disconnected", "connected:false", "changed:k2"}, rb.next(t, "changed:k2"))
}

func TestNotifyPageChange(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	a, b := connect(t, srv, nil), connect(t, srv, nil)
	rb, _ := listen(t, b, "")
	require.NoError(t, a.Set(t.Context(), "k1", []byte("v"), time.Minute))
	rb.next(t, "changed:k1")
	srv.NewPage(cacheName, momentostore.Topic) // numbering restarts at 1: not even a gap
	require.NoError(t, a.Set(t.Context(), "k2", []byte("v"), time.Minute))
	assert.Equal(t, []string{"disconnected", "connected:false", "changed:k2"}, rb.next(t, "changed:k2"))
}

func TestNotifyReconnect(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	a, b := connect(t, srv, nil), connect(t, srv, nil)
	rb, _ := listen(t, b, "")
	require.NoError(t, a.Set(t.Context(), "k1", []byte("v"), time.Minute))
	rb.next(t, "changed:k1")

	srv.BreakSubscriptions(cacheName, momentostore.Topic, codes.Unavailable)
	// The SDK resubscribes by itself, and the new stream looks like a
	// heartbeat; the store reports the gap it may hide.
	assert.Equal(t, []string{"disconnected", "connected:false"}, rb.next(t, "connected:false"))
	require.NoError(t, a.Set(t.Context(), "k2", []byte("v"), time.Minute))
	assert.Equal(t, []string{"changed:k2"}, rb.next(t, "changed:k2"))
	assert.Equal(t, 2, srv.Calls("Subscribe"), "b's subscription, then the SDK's resubscription")
}

// TestNotifyStopDuringOutage: while the service refuses connections, the
// SDK's reconnect loop never checks its context; stop must still end it,
// and leave no goroutine behind. Not parallel: it counts goroutines.
func TestNotifyStopDuringOutage(t *testing.T) {
	srv := fakemomento.Start(t, cacheName)
	b := connect(t, srv, nil)
	rb, stop := listen(t, b, "")
	require.Equal(t, 1, goroutines("momentostore.(*notifier).run"))

	srv.Stop()
	rb.next(t, "disconnected")
	// Let the SDK go round its reconnect loop against the refusal.
	eventually(t, func() bool { return goroutines("attemptReconnect") == 1 }, "the SDK is not reconnecting")
	done := make(chan struct{})
	go func() {
		stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(failsafe):
		t.Fatal("stop did not return during the outage")
	}
	assert.Zero(t, goroutines("momentostore.(*notifier).run"), "the subscription's goroutine is gone")
	assert.Zero(t, goroutines("attemptReconnect"), "and the SDK's reconnect loop with it")
	assert.NotContains(t, rb.all()[2:], "connected:false", "nothing told after stop")
}

func TestNotifyStopEndsTheSubscription(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	b := connect(t, srv, nil)
	_, stop1 := listen(t, b, "a:")
	r2, stop2 := listen(t, b, "b:")
	assert.Equal(t, 1, srv.Subscribers(cacheName, momentostore.Topic), "one subscription per store")
	stop1()
	assert.Equal(t, 1, srv.Subscribers(cacheName, momentostore.Topic), "still one listener")
	stop2()
	eventually(t, func() bool { return srv.Subscribers(cacheName, momentostore.Topic) == 0 }, "the subscription outlived its last listener")
	stop2() // a second stop does nothing

	r3, _ := listen(t, b, "")
	assert.Equal(t, 1, srv.Subscribers(cacheName, momentostore.Topic), "subscribed again")
	require.NoError(t, b.Set(t.Context(), "b:k", []byte("v"), time.Minute))
	r3.next(t, "changed:b:k")
	assert.Equal(t, []string{"connected:false"}, r2.all(), "a stopped listener is told nothing")
}

func TestNotifyUnreadableMessage(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	b := connect(t, srv, nil)
	rb, _ := listen(t, b, "")
	topics, err := momento.NewTopicClient(config.TopicsDefaultWithLogger(logger.NewNoopMomentoLoggerFactory()), srv.Credentials())
	require.NoError(t, err)
	_, err = topics.Publish(t.Context(), &momento.TopicPublishRequest{CacheName: cacheName, TopicName: momentostore.Topic, Value: momento.String("hello")})
	require.NoError(t, err)
	assert.Equal(t, []string{"disconnected", "connected:false"}, rb.next(t, "connected:false"),
		"a message no store wrote may stand for any change")
}

// TestNotifyFailedPublishOwesAFlush: a Publish that fails (it is never
// retried by the SDK) loses keys; the publisher then tells every
// subscriber that anything may have changed.
func TestNotifyFailedPublishOwesAFlush(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	a, b := connect(t, srv, nil), connect(t, srv, nil)
	rb, _ := listen(t, b, "")
	srv.Inject("Publish", fakemomento.Fault{Code: codes.Unavailable})
	require.NoError(t, a.Set(t.Context(), "k", []byte("v"), time.Minute))
	eventually(t, func() bool { return srv.Calls("Publish") > 0 }, "nothing published")
	srv.Heal()
	assert.Equal(t, []string{"disconnected", "connected:false"}, rb.next(t, "connected:false"))
}

func TestNotifyUnsupportedWithoutTopics(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	for _, s := range []*momentostore.Store{
		momentostore.New(client(t, srv), cacheName),
		connect(t, srv, &momentostore.Options{NoTopics: true}),
	} {
		_, err := s.Notify("", newRecorder())
		assert.ErrorIs(t, err, errors.ErrUnsupported)
	}
}

func TestCloseEndsNotify(t *testing.T) {
	t.Parallel()
	srv := fakemomento.Start(t, cacheName)
	b, err := momentostore.Connect(t.Context(), cacheName, srv.Credentials(), nil)
	require.NoError(t, err)
	r, stop := listen(t, b, "")
	b.Close()
	eventually(t, func() bool { return srv.Subscribers(cacheName, momentostore.Topic) == 0 }, "Close left the subscription")
	stop() // after Close: nothing to do
	_, err = b.Notify("", newRecorder())
	assert.Error(t, err)
	assert.Equal(t, []string{"connected:false"}, r.all())
}
