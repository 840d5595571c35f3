package storetest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/store"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

func TestDelayIgnoringContextHangsInFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		fs.Inject(storetest.OpGet, storetest.Fault{Delay: time.Minute, IgnoreContext: true})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := fs.Get(ctx, "k")
		assert.Equal(t, time.Minute, time.Since(start), "the call waits out its delay whatever ctx says")
		assert.ErrorIs(t, err, context.DeadlineExceeded, "then reaches the store with a done context")

		// With Err, it fails with Err after the full delay.
		fs.Inject(storetest.OpGet, storetest.Fault{Delay: time.Minute, IgnoreContext: true, Err: errors.New("i/o timeout")})
		start = time.Now()
		_, _, err = fs.Get(ctx, "k")
		assert.Equal(t, time.Minute, time.Since(start))
		assert.ErrorContains(t, err, "i/o timeout")
	})
}

func TestFaultTimesFailsOnlyTheNextCalls(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	fs := storetest.NewFaultyStore(memstore.New())
	fs.Inject(storetest.OpSet, storetest.Fault{Times: 2})
	for i := range 2 {
		assert.ErrorIs(t, fs.Set(ctx, "k", []byte("v"), time.Minute), storetest.ErrInjected, "call %d", i+1)
	}
	assert.NoError(t, fs.Set(ctx, "k", []byte("v"), time.Minute), "the third call goes through")
	assert.NoError(t, fs.Set(ctx, "k", []byte("v"), time.Minute))

	// InjectAll gives each operation its own count.
	fs.InjectAll(storetest.Fault{Times: 1})
	_, _, err := fs.Get(ctx, "k")
	assert.ErrorIs(t, err, storetest.ErrInjected)
	assert.ErrorIs(t, fs.Delete(ctx, "k"), storetest.ErrInjected, "Get's call did not use up Delete's fault")
	_, _, err = fs.Get(ctx, "k")
	assert.NoError(t, err)
	assert.NoError(t, fs.Delete(ctx, "k"))
}

func TestFaultOnOneKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	fs := storetest.NewFaultyStore(memstore.New())
	require.NoError(t, fs.Set(ctx, "good", []byte("v"), time.Minute))
	require.NoError(t, fs.Set(ctx, "bad", []byte("v"), time.Minute))
	fs.Inject(storetest.OpGet, storetest.Fault{Key: "bad", Times: 1})
	_, ok, err := fs.Get(ctx, "good")
	assert.NoError(t, err)
	assert.True(t, ok, "another key is unaffected, and uses up none of Times")
	_, _, err = fs.Get(ctx, "bad")
	assert.ErrorIs(t, err, storetest.ErrInjected)
	_, ok, err = fs.Get(ctx, "bad")
	assert.NoError(t, err, "Times ran out")
	assert.True(t, ok)
}

func TestLoseReplyAppliesTheOperation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := memstore.New()
	fs := storetest.NewFaultyStore(m)
	lost := func(op storetest.Op) { fs.Inject(op, storetest.Fault{LoseReply: true, Times: 1}) }
	held := func(k string) string { v, _, _ := m.Get(ctx, k); return string(v) }

	lost(storetest.OpSet)
	assert.ErrorIs(t, fs.Set(ctx, "k", []byte("v1"), time.Minute), storetest.ErrInjected)
	assert.Equal(t, "v1", held("k"), "the Set took effect")

	lost(storetest.OpSetIfAbsent)
	_, err := fs.SetIfAbsent(ctx, "lock", []byte("token"), time.Minute)
	assert.ErrorIs(t, err, storetest.ErrInjected)
	assert.Equal(t, "token", held("lock"))
	stored, err := fs.SetIfAbsent(ctx, "lock", []byte("token"), time.Minute)
	require.NoError(t, err)
	assert.True(t, stored, "the retry finds its own value")

	lost(storetest.OpCompareAndSwap)
	_, err = fs.CompareAndSwap(ctx, "k", []byte("v1"), []byte("v2"), time.Minute)
	assert.ErrorIs(t, err, storetest.ErrInjected)
	assert.Equal(t, "v2", held("k"))

	lost(storetest.OpCompareAndDelete)
	_, err = fs.CompareAndDelete(ctx, "lock", []byte("token"))
	assert.ErrorIs(t, err, storetest.ErrInjected)
	assert.Empty(t, held("lock"))

	custom := errors.New("connection reset by peer")
	fs.Inject(storetest.OpDelete, storetest.Fault{LoseReply: true, Err: custom})
	assert.ErrorIs(t, fs.Delete(ctx, "k"), custom)
	assert.Empty(t, held("k"))

	gs := storetest.NewFaultyStore(getOrSetStore{m})
	gs.Inject(storetest.OpGetOrSet, storetest.Fault{LoseReply: true})
	_, _, err = gs.GetOrSet(ctx, "g", []byte("mine"), time.Minute)
	assert.ErrorIs(t, err, storetest.ErrInjected)
	assert.Equal(t, "mine", held("g"))

	gs.Inject(storetest.OpGet, storetest.Fault{LoseReply: true})
	_, ok, err := gs.Get(ctx, "g")
	assert.ErrorIs(t, err, storetest.ErrInjected)
	assert.False(t, ok, "a lost reply reports nothing")
}

func TestTruncateAndCorruptDamageReads(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := memstore.New()
	fs := storetest.NewFaultyStore(m)
	require.NoError(t, fs.Set(ctx, "k", []byte("hello"), time.Minute))

	fs.Inject(storetest.OpGet, storetest.Fault{Truncate: 2})
	v, ok, err := fs.Get(ctx, "k")
	require.NoError(t, err, "a Truncate fault alone does not fail the call")
	assert.True(t, ok)
	assert.Equal(t, "hel", string(v))

	fs.Inject(storetest.OpGet, storetest.Fault{Truncate: 100})
	v, ok, err = fs.Get(ctx, "k")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Empty(t, v, "cut to nothing, not past it")

	fs.Inject(storetest.OpGet, storetest.Fault{Corrupt: true})
	v, _, err = fs.Get(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, []byte{'h', 'e', 'l', 'l', 'o' ^ 0xff}, v)

	fs.Inject(storetest.OpGet, storetest.Fault{Corrupt: true})
	_, ok, err = fs.Get(ctx, "missing")
	require.NoError(t, err)
	assert.False(t, ok, "a miss stays a miss")

	v, _, _ = m.Get(ctx, "k")
	assert.Equal(t, "hello", string(v), "the stored value is untouched")

	gs := storetest.NewFaultyStore(getOrSetStore{m})
	gs.Inject(storetest.OpGetOrSet, storetest.Fault{Truncate: 1})
	cur, stored, err := gs.GetOrSet(ctx, "k", []byte("other"), time.Minute)
	require.NoError(t, err)
	assert.False(t, stored)
	assert.Equal(t, "hell", string(cur))
}

func TestBatchFaults(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := memstore.New()
	fs := storetest.NewFaultyStore(m)
	require.NoError(t, m.Set(ctx, "a", []byte("alpha"), time.Minute))
	require.NoError(t, m.Set(ctx, "b", []byte("beta"), time.Minute))
	batch := func() []store.Op {
		return []store.Op{
			{Kind: store.OpGet, Key: "a"},
			{Kind: store.OpGet, Key: "b"},
			{Kind: store.OpSet, Key: "c", Value: []byte("gamma"), TTL: time.Minute},
		}
	}

	// A fault on OpBatch fails the whole batch, which does nothing.
	fs.Inject(storetest.OpBatch, storetest.Fault{Times: 1})
	assert.ErrorIs(t, fs.Batch(ctx, batch()), storetest.ErrInjected)
	assert.Empty(t, m.Keys()[2:], "nothing was written")

	// A lost reply: the batch ran.
	fs.Inject(storetest.OpBatch, storetest.Fault{LoseReply: true, Times: 1})
	assert.ErrorIs(t, fs.Batch(ctx, batch()), storetest.ErrInjected)
	assert.Equal(t, []string{"a", "b", "c"}, m.Keys())
	require.NoError(t, m.Delete(ctx, "c"))

	// Unscoped faults on single-key operations are not the batch's.
	fs.Inject(storetest.OpGet, storetest.Fault{})
	ops := batch()
	require.NoError(t, fs.Batch(ctx, ops))
	for _, op := range ops {
		assert.NoError(t, op.Err, "%v %s", op.Kind, op.Key)
	}

	// Key-scoped ones hit the operations on their key, and only those.
	fs.Heal()
	fs.Inject(storetest.OpGet, storetest.Fault{Key: "a"})
	fs.Inject(storetest.OpSet, storetest.Fault{Key: "c", Err: errors.New("slot moved")})
	require.NoError(t, m.Delete(ctx, "c"))
	ops = batch()
	require.NoError(t, fs.Batch(ctx, ops))
	assert.ErrorIs(t, ops[0].Err, storetest.ErrInjected)
	assert.False(t, ops[0].OK)
	assert.NoError(t, ops[1].Err)
	assert.Equal(t, "beta", string(ops[1].Result))
	assert.ErrorContains(t, ops[2].Err, "slot moved")
	assert.Equal(t, []string{"a", "b"}, m.Keys(), "the failed Set did not reach the store")

	// An OpBatch fault with a Key hits every kind on that key.
	fs.Heal()
	fs.Inject(storetest.OpBatch, storetest.Fault{Key: "c", LoseReply: true})
	ops = batch()
	require.NoError(t, fs.Batch(ctx, ops))
	assert.NoError(t, ops[0].Err)
	assert.ErrorIs(t, ops[2].Err, storetest.ErrInjected)
	assert.Equal(t, []string{"a", "b", "c"}, m.Keys(), "the Set whose reply was lost took effect")

	// Damaged reads: the whole batch's, and one key's.
	fs.Heal()
	fs.Inject(storetest.OpBatch, storetest.Fault{Truncate: 1})
	fs.Inject(storetest.OpGet, storetest.Fault{Key: "b", Corrupt: true})
	ops = batch()
	require.NoError(t, fs.Batch(ctx, ops))
	assert.Equal(t, "alph", string(ops[0].Result))
	assert.Equal(t, []byte{'b', 'e', 't' ^ 0xff}, ops[1].Result, "truncated by the batch's fault, then corrupted by b's")

	assert.Equal(t, 6, fs.Calls(storetest.OpBatch), "a batch counts once")
	assert.Zero(t, fs.Calls(storetest.OpGet), "the operations inside are not counted on their own")
	assert.Zero(t, fs.Calls(storetest.OpSet))
}

func TestBatchKeyFaultDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		fs.Inject(storetest.OpGet, storetest.Fault{Key: "slow", Delay: time.Second})
		ops := []store.Op{{Kind: store.OpGet, Key: "fast"}, {Kind: store.OpGet, Key: "slow"}}
		start := time.Now()
		require.NoError(t, fs.Batch(context.Background(), ops))
		assert.Equal(t, time.Second, time.Since(start), "the batch waits for its slow key")
		assert.NoError(t, ops[1].Err, "a delay alone does not fail the operation")
	})
}

// listener records what it is told, for the tests of Notify.
type listener struct {
	mu     sync.Mutex
	events []string
}

func (l *listener) add(e string) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}
func (l *listener) Connected(complete bool) {
	if complete {
		l.add("connected")
	} else {
		l.add("connected, incomplete")
	}
}
func (l *listener) Changed(key string)     { l.add("changed " + key) }
func (l *listener) Disconnected(err error) { l.add("disconnected: " + err.Error()) }
func (l *listener) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.events
	l.events = nil
	return e
}

func TestNotifyDisconnectLosesChanges(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := memstore.New()
	fs := storetest.NewFaultyStore(m)
	l := &listener{}
	stop, err := fs.Notify("k", l)
	require.NoError(t, err)
	defer stop()
	require.NoError(t, m.Set(ctx, "k1", []byte("v"), time.Minute))
	assert.Equal(t, []string{"connected", "changed k1"}, l.take())

	fs.Disconnect(errors.New("link lost"))
	fs.Disconnect(errors.New("again")) // already down: not told twice
	require.NoError(t, m.Set(ctx, "k2", []byte("v"), time.Minute))
	assert.Equal(t, []string{"disconnected: link lost"}, l.take(), "a change while disconnected is lost")

	// A registration while down hears nothing until the link is back.
	l2 := &listener{}
	stop2, err := fs.Notify("", l2)
	require.NoError(t, err)
	defer stop2()
	assert.Empty(t, l2.take())

	fs.Reconnect()
	require.NoError(t, m.Set(ctx, "k3", []byte("v"), time.Minute))
	assert.Equal(t, []string{"connected", "changed k3"}, l.take())
	assert.Equal(t, []string{"connected", "changed k3"}, l2.take())

	fs.Disconnect(nil)
	fs.Heal() // Heal reconnects too
	assert.Equal(t, []string{"disconnected: " + storetest.ErrInjected.Error(), "connected"}, l.take())
}

func TestNotifyStopEndsCalls(t *testing.T) {
	t.Parallel()
	m := memstore.New()
	fs := storetest.NewFaultyStore(m)
	l := &listener{}
	stop, err := fs.Notify("", l)
	require.NoError(t, err)
	stop()
	stop() // twice is harmless
	l.take()
	require.NoError(t, m.Set(t.Context(), "k", []byte("v"), time.Minute))
	fs.Disconnect(nil)
	fs.Reconnect()
	assert.Empty(t, l.take(), "no call after stop returned")
}

func TestNotifyFaults(t *testing.T) {
	t.Parallel()
	m := memstore.New()
	fs := storetest.NewFaultyStore(m)
	fs.Inject(storetest.OpNotify, storetest.Fault{Times: 1})
	l := &listener{}
	_, err := fs.Notify("", l)
	assert.ErrorIs(t, err, storetest.ErrInjected)
	assert.Empty(t, l.take(), "a failed Notify registers nothing")

	fs.Inject(storetest.OpNotify, storetest.Fault{LoseReply: true, Times: 1})
	_, err = fs.Notify("", l)
	assert.ErrorIs(t, err, storetest.ErrInjected)
	assert.Equal(t, []string{"connected"}, l.take(), "the registration happened, then its reply was lost")
	require.NoError(t, m.Set(t.Context(), "k", []byte("v"), time.Minute))
	assert.Empty(t, l.take(), "and was undone: nothing leaks")
}

func TestNotifyNeverWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		fs.InjectAll(storetest.Fault{Delay: time.Hour})
		start := time.Now()
		l := &listener{}
		stop, err := fs.Notify("", l)
		require.NoError(t, err)
		defer stop()
		assert.Zero(t, time.Since(start), "Notify returns at once, as the contract says")
		assert.Equal(t, []string{"connected"}, l.take())
		assert.Equal(t, 1, fs.Calls(storetest.OpNotify))
	})
}

// TestFaultsInsideABubble: a FaultyStore over memstore leaves nothing
// running, so a bubble ends cleanly, with every kind of fault used.
func TestFaultsInsideABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		fs := storetest.NewFaultyStore(memstore.New())
		l := &listener{}
		stop, err := fs.Notify("", l)
		require.NoError(t, err)
		defer stop()
		fs.InjectAll(storetest.Fault{Delay: time.Second, LoseReply: true, Times: 1})
		for op, err := range every(ctx, fs) {
			if op != storetest.OpGetOrSet { // memstore has none
				assert.ErrorIs(t, err, storetest.ErrInjected, "%s", op)
			}
		}
		fs.Disconnect(nil)
		fs.Heal()
		assert.NotEmpty(t, l.take())
	})
}
