package redisstore_test

// A server that accepts commands and never answers (a partition, a dead
// host whose connections were never reset) must cost a caller its
// context's deadline, not go-redis's ReadTimeout times its retries.

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/readthrough-go/readthrough/store"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// blackhole accepts connections and reads whatever comes, answering
// nothing.
type blackhole struct {
	Addr string
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

func startBlackhole(t *testing.T) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &blackhole{Addr: ln.Addr().String(), ln: ln}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(b.Close)
	return b
}

// CloseConns ends the hang: every connection so far is closed, and its
// client sees EOF.
func (b *blackhole) CloseConns() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
}

// Close stops accepting, closes every connection and waits for its
// goroutines.
func (b *blackhole) Close() {
	_ = b.ln.Close()
	b.CloseConns()
	b.wg.Wait()
}

// storeCall is one method of the store, on any key.
type storeCall struct {
	name string
	call func(ctx context.Context, s *redisstore.Store) error
}

var storeCalls = []storeCall{
	{"Get", func(ctx context.Context, s *redisstore.Store) error {
		_, _, err := s.Get(ctx, "k")
		return err
	}},
	{"Set", func(ctx context.Context, s *redisstore.Store) error {
		return s.Set(ctx, "k", []byte("v"), time.Minute)
	}},
	{"SetIfAbsent", func(ctx context.Context, s *redisstore.Store) error {
		_, err := s.SetIfAbsent(ctx, "k", []byte("v"), time.Minute)
		return err
	}},
	{"Delete", func(ctx context.Context, s *redisstore.Store) error {
		return s.Delete(ctx, "k")
	}},
	{"GetOrSet", func(ctx context.Context, s *redisstore.Store) error {
		_, _, err := s.GetOrSet(ctx, "k", []byte("v"), time.Minute)
		return err
	}},
	{"CompareAndSwap", func(ctx context.Context, s *redisstore.Store) error {
		_, err := s.CompareAndSwap(ctx, "k", []byte("old"), []byte("v"), time.Minute)
		return err
	}},
	{"CompareAndSwapByHash", func(ctx context.Context, s *redisstore.Store) error {
		_, err := s.CompareAndSwap(ctx, "k", bytes.Repeat([]byte("o"), 1000), []byte("v"), time.Minute)
		return err
	}},
	{"CompareAndDelete", func(ctx context.Context, s *redisstore.Store) error {
		_, err := s.CompareAndDelete(ctx, "k", []byte("v"))
		return err
	}},
	{"Batch", func(ctx context.Context, s *redisstore.Store) error {
		return s.Batch(ctx, everyKind("k"))
	}},
}

// everyKind is a batch with one op of each kind, on keys starting with
// prefix.
func everyKind(prefix string) []store.Op {
	return []store.Op{
		{Kind: store.OpGet, Key: prefix + "get"},
		{Kind: store.OpSet, Key: prefix + "set", Value: []byte("v"), TTL: time.Minute},
		{Kind: store.OpSetIfAbsent, Key: prefix + "sia", Value: []byte("v"), TTL: time.Minute},
		{Kind: store.OpGetOrSet, Key: prefix + "gos", Value: []byte("v"), TTL: time.Minute},
		{Kind: store.OpCompareAndSwap, Key: prefix + "cas", Old: []byte("o"), Value: []byte("v"), TTL: time.Minute},
		{Kind: store.OpDelete, Key: prefix + "del"},
	}
}

// clientKinds builds every kind of client, as users build them: defaults,
// and ContextTimeoutEnabled.
var clientKinds = []struct {
	name string
	new  func(addr string) redis.UniversalClient
}{
	{"Client", func(addr string) redis.UniversalClient {
		return redis.NewClient(&redis.Options{Addr: addr})
	}},
	{"ClientContextTimeout", func(addr string) redis.UniversalClient {
		return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	}},
	{"Cluster", func(addr string) redis.UniversalClient {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}})
	}},
	// The slots are known, so the first command fetches COMMAND, which
	// go-redis bounds by 5 s of its own even with ContextTimeoutEnabled.
	{"ClusterContextTimeoutKnownSlots", func(addr string) redis.UniversalClient {
		return redis.NewClusterClient(&redis.ClusterOptions{
			ContextTimeoutEnabled: true,
			ClusterSlots: func(context.Context) ([]redis.ClusterSlot, error) {
				return []redis.ClusterSlot{{Start: 0, End: 16383, Nodes: []redis.ClusterNode{{Addr: addr}}}}, nil
			},
		})
	}},
	{"Ring", func(addr string) redis.UniversalClient {
		return redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr}})
	}},
	{"RingContextTimeout", func(addr string) redis.UniversalClient {
		return redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr}, ContextTimeoutEnabled: true})
	}},
	{"Universal", func(addr string) redis.UniversalClient {
		return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}})
	}},
}

// TestEveryCallEndsWithItsContext calls every method, on every kind of
// client, against a server that never answers. go-redis alone would hold
// each call for its ReadTimeout (5 s by default, more with retries); the
// store returns at the context's deadline, or at its cancel.
func TestEveryCallEndsWithItsContext(t *testing.T) {
	hole := startBlackhole(t)
	const timeout = 100 * time.Millisecond
	// go-redis's own timeout would fire after 5 s; anything under a second
	// is the context's doing, with room for a loaded machine.
	const bound = time.Second
	t.Run("group", func(t *testing.T) {
		for _, kind := range clientKinds {
			t.Run(kind.name, func(t *testing.T) {
				t.Parallel()
				rdb := kind.new(hole.Addr)
				t.Cleanup(func() { _ = rdb.Close() })
				s := redisstore.New(rdb)
				for _, m := range storeCalls {
					ctx, cancel := context.WithTimeout(context.Background(), timeout)
					start := time.Now()
					err := m.call(ctx, s)
					took := time.Since(start)
					cancel()
					assert.ErrorIs(t, err, context.DeadlineExceeded, "%s", m.name)
					assert.Less(t, took, bound, "%s returned after %v, not at its deadline", m.name, took)
					t.Logf("%s: %v: %v", m.name, took.Round(time.Millisecond), err)
				}
				// A cancel with no deadline at all.
				ctx, cancel := context.WithCancel(context.Background())
				timer := time.AfterFunc(timeout, cancel)
				defer timer.Stop()
				start := time.Now()
				_, _, err := s.Get(ctx, "k")
				took := time.Since(start)
				assert.ErrorIs(t, err, context.Canceled, "Get cancelled")
				assert.Less(t, took, bound, "Get returned %v after its cancel", took)
			})
		}
	})
	// The hang ends; every command left behind ends with it.
	hole.Close()
	waitNoCallsRunning(t)
}

// TestRecoversAfterTheHang sends a burst of calls into a hung server,
// then lets the server answer again: the abandoned commands end, and the
// same store works.
func TestRecoversAfterTheHang(t *testing.T) {
	srv := redistest.Start(t)
	hole := startBlackhole(t)
	var hung atomic.Bool
	hung.Store(true)
	rdb := redis.NewClient(&redis.Options{
		Addr: srv.Addr,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if hung.Load() {
				addr = hole.Addr
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	})
	t.Cleanup(func() { _ = rdb.Close() })
	s := redisstore.New(rdb)

	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			err := storeCalls[i%len(storeCalls)].call(ctx, s)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		})
	}
	wg.Wait()
	assert.Positive(t, s.Abandoned(), "the commands still wait on the hung server")

	hung.Store(false)
	hole.CloseConns()
	waitFor(t, "abandoned commands to end", func() bool { return s.Abandoned() == 0 })
	waitNoCallsRunning(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Set(ctx, "k", []byte("back"), time.Minute))
	got, ok, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "back", string(got))
	ops := everyKind("b:")
	require.NoError(t, s.Batch(ctx, ops))
	for _, op := range ops {
		assert.NoError(t, op.Err, "%v", op.Kind)
	}
}

// TestBacklogFailsFast: once too many commands are stuck on a hung server,
// a call fails at once instead of waiting out its own context.
func TestBacklogFailsFast(t *testing.T) {
	hole := startBlackhole(t)
	rdb := redis.NewClient(&redis.Options{Addr: hole.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	s := redisstore.New(rdb)
	s.SetMaxAbandoned(3)
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, _, err := s.Get(ctx, "k")
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	require.EqualValues(t, 3, s.Abandoned())

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	for _, m := range storeCalls {
		err := m.call(ctx, s)
		assert.ErrorIs(t, err, redisstore.ErrBacklog, "%s", m.name)
		assert.NotErrorIs(t, err, context.DeadlineExceeded, "%s", m.name)
	}
	require.NoError(t, ctx.Err(), "no call waited for its context")

	hole.CloseConns()
	waitFor(t, "abandoned commands to end", func() bool { return s.Abandoned() == 0 })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	_, _, err := s.Get(ctx2, "k")
	assert.NotErrorIs(t, err, redisstore.ErrBacklog, "the backlog drained")
	hole.Close()
	waitNoCallsRunning(t)
}

// panicHook panics in every command, or exits its goroutine.
type panicHook struct{ goexit bool }

func (panicHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h panicHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.goexit {
			runtime.Goexit()
		}
		panic("hook panic")
	}
}
func (panicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestPanicInAHookReachesTheCaller: a command run on a goroutine of the
// store's must not crash the process when a user's hook panics; the
// caller gets the panic, as it would without the goroutine.
func TestPanicInAHookReachesTheCaller(t *testing.T) {
	hole := startBlackhole(t)
	for _, goexit := range []bool{false, true} {
		rdb := redis.NewClient(&redis.Options{Addr: hole.Addr})
		rdb.AddHook(panicHook{goexit: goexit})
		s := redisstore.New(rdb)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if goexit {
			_, ok, err := s.Get(ctx, "k")
			assert.Error(t, err, "a command that never finished is an error")
			assert.False(t, ok, "never a hit")
		} else {
			assert.PanicsWithValue(t, "hook panic", func() { _, _, _ = s.Get(ctx, "k") })
		}
		cancel()
		_ = rdb.Close()
	}
	waitNoCallsRunning(t)
}

// waitFor polls cond until it holds, failing t after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after 20s", what)
		}
	}
}

// waitNoCallsRunning waits until no goroutine of the store's is left.
func waitNoCallsRunning(t *testing.T) {
	t.Helper()
	const mark = "redisstore.(*Store).runCall"
	var stacks []byte
	running := func() bool {
		stacks = make([]byte, 1<<20)
		for {
			n := runtime.Stack(stacks, true)
			if n < len(stacks) {
				stacks = stacks[:n]
				break
			}
			stacks = make([]byte, 2*len(stacks))
		}
		return bytes.Contains(stacks, []byte(mark))
	}
	for deadline := time.Now().Add(20 * time.Second); running(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a store goroutine is still running 20s after its command should have ended:\n%s", stacks)
		}
	}
}
