package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

func wantPTTL(t *testing.T, rdb redis.Cmdable, key string, ttl time.Duration) {
	t.Helper()
	pttl, err := rdb.PTTL(t.Context(), key).Result()
	require.NoError(t, err)
	assert.Greater(t, pttl, ttl-time.Second, "%s: the TTL reached the server", key)
	assert.LessOrEqual(t, pttl, ttl, "%s", key)
}

func wantHeld(t *testing.T, rdb redis.Cmdable, key, want string) {
	t.Helper()
	got, err := rdb.Get(t.Context(), key).Result()
	require.NoError(t, err, key)
	assert.Equal(t, want, got, key)
}

func TestGetOrSet(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	s := redisstore.New(rdb)
	ctx := t.Context()

	cur, stored, err := s.GetOrSet(ctx, "k", []byte("lease-1"), 5*time.Second)
	require.NoError(t, err)
	assert.True(t, stored)
	assert.Nil(t, cur)
	wantPTTL(t, rdb, "k", 5*time.Second)

	cur, stored, err = s.GetOrSet(ctx, "k", []byte("lease-2"), time.Minute)
	require.NoError(t, err)
	assert.False(t, stored)
	assert.Equal(t, "lease-1", string(cur), "the bytes the key holds")

	// A retry whose first reply was lost finds its own value: stored.
	cur, stored, err = s.GetOrSet(ctx, "k", []byte("lease-1"), 5*time.Second)
	require.NoError(t, err)
	assert.True(t, stored)
	assert.Nil(t, cur)
	ok, err := s.SetIfAbsent(ctx, "k", []byte("lease-1"), 5*time.Second)
	require.NoError(t, err)
	assert.True(t, ok, "SetIfAbsent too")
	wantHeld(t, rdb, "k", "lease-1")
}

func TestCompareAndSwap(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	s := redisstore.New(rdb)
	ctx := t.Context()

	for _, size := range []int{0, 1, 64, 65, 1 << 20} { // around the hashing threshold, and large
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			key := fmt.Sprint("cas:", size)
			old := bytes.Repeat([]byte("o"), size)
			swapped, err := s.CompareAndSwap(ctx, key, old, []byte("new"), time.Minute)
			require.NoError(t, err)
			assert.False(t, swapped, "a missing key never matches, not even an empty old")

			require.NoError(t, s.Set(ctx, key, old, time.Minute))
			// Same length, last byte differs: no match, whether compared
			// directly or by hash.
			if size > 0 {
				other := bytes.Clone(old)
				other[size-1] = 'x'
				swapped, err = s.CompareAndSwap(ctx, key, other, []byte("new"), time.Minute)
				require.NoError(t, err)
				assert.False(t, swapped)
				wantHeld(t, rdb, key, string(old))
			}
			swapped, err = s.CompareAndSwap(ctx, key, append(bytes.Clone(old), 'o'), []byte("new"), time.Minute)
			require.NoError(t, err)
			assert.False(t, swapped, "a longer old")

			swapped, err = s.CompareAndSwap(ctx, key, old, []byte("new"), 7*time.Second)
			require.NoError(t, err)
			assert.True(t, swapped)
			wantHeld(t, rdb, key, "new")
			wantPTTL(t, rdb, key, 7*time.Second)

			// The same call again (its reply was lost): the key holds value.
			swapped, err = s.CompareAndSwap(ctx, key, old, []byte("new"), 9*time.Second)
			require.NoError(t, err)
			assert.True(t, swapped, "idempotent")
			wantPTTL(t, rdb, key, 9*time.Second)
		})
	}

	t.Run("LeaseRenewal", func(t *testing.T) {
		require.NoError(t, s.Set(ctx, "lease", []byte("tok"), time.Second))
		swapped, err := s.CompareAndSwap(ctx, "lease", []byte("tok"), []byte("tok"), time.Minute)
		require.NoError(t, err)
		assert.True(t, swapped)
		wantPTTL(t, rdb, "lease", time.Minute)
	})
}

// argsHook records the size of the largest argument of each command.
type argsHook struct {
	mu      sync.Mutex
	largest map[string]int
}

func (*argsHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *argsHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.record(cmd)
		return next(ctx, cmd)
	}
}
func (h *argsHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.record(cmd)
		}
		return next(ctx, cmds)
	}
}
func (h *argsHook) record(cmd redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range cmd.Args() {
		n := 0
		switch a := a.(type) {
		case []byte:
			n = len(a)
		case string:
			n = len(a)
		}
		h.largest[cmd.Name()] = max(h.largest[cmd.Name()], n)
	}
}

// TestCompareAndSwapSendsAHashOfALargeOld: a 1 MB old value crosses the
// wire as its SHA-1, in the single call and in a batch.
func TestCompareAndSwapSendsAHashOfALargeOld(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	h := &argsHook{largest: map[string]int{}}
	rdb.AddHook(h)
	s := redisstore.New(rdb)
	ctx := t.Context()
	old := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	require.NoError(t, s.Set(ctx, "big", old, time.Minute))
	require.NoError(t, s.Set(ctx, "big2", old, time.Minute))

	swapped, err := s.CompareAndSwap(ctx, "big", old, []byte("small"), time.Minute)
	require.NoError(t, err)
	assert.True(t, swapped)
	wantHeld(t, rdb, "big", "small")
	ops := []store.Op{{Kind: store.OpCompareAndSwap, Key: "big2", Old: old, Value: []byte("small"), TTL: time.Minute}}
	require.NoError(t, s.Batch(ctx, ops))
	require.NoError(t, ops[0].Err)
	assert.True(t, ops[0].OK)
	wantHeld(t, rdb, "big2", "small")

	h.mu.Lock()
	defer h.mu.Unlock()
	for _, name := range []string{"evalsha", "eval"} {
		assert.Less(t, h.largest[name], 1000, "%s sent an argument of %d bytes", name, h.largest[name])
	}
	assert.Equal(t, len(old), h.largest["set"], "the hook sees argument sizes")
}

// TestRoundTrips counts what each call sends, with a hook on the client.
func TestRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	cnt := redistest.CountCommands(rdb)
	s := redisstore.New(rdb)
	ctx := t.Context()

	// Warm up: a connection, and the scripts loaded (EVALSHA, NOSCRIPT,
	// EVAL: two round trips the first time).
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	cnt.Reset()
	_, err := s.CompareAndSwap(ctx, "warm", []byte("a"), []byte("b"), time.Minute)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"evalsha": 1, "eval": 1}, cnt.Snapshot().Commands, "a flushed script costs one more round trip")
	_, err = s.CompareAndDelete(ctx, "warm", []byte("a"))
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		call func() error
		want map[string]int
	}{
		{"GetOrSet", func() error {
			_, _, err := s.GetOrSet(ctx, "gos", []byte("v"), time.Minute)
			return err
		}, map[string]int{"set": 1}},
		{"GetOrSetHeld", func() error {
			_, _, err := s.GetOrSet(ctx, "gos", []byte("w"), time.Minute)
			return err
		}, map[string]int{"set": 1}},
		{"SetIfAbsent", func() error {
			_, err := s.SetIfAbsent(ctx, "sia", []byte("v"), time.Minute)
			return err
		}, map[string]int{"set": 1}},
		{"CompareAndSwap", func() error {
			_, err := s.CompareAndSwap(ctx, "gos", []byte("v"), []byte("w"), time.Minute)
			return err
		}, map[string]int{"evalsha": 1}},
		{"CompareAndDelete", func() error {
			_, err := s.CompareAndDelete(ctx, "gos", []byte("w"))
			return err
		}, map[string]int{"evalsha": 1}},
	} {
		cnt.Reset()
		require.NoError(t, tc.call(), tc.name)
		got := cnt.Snapshot()
		assert.Equal(t, 1, got.RoundTrips, tc.name)
		assert.Equal(t, tc.want, got.Commands, tc.name)
	}

	t.Run("Batch", func(t *testing.T) {
		ops, want := mixedBatch(100)
		cnt.Reset()
		require.NoError(t, s.Batch(ctx, ops))
		got := cnt.Snapshot()
		assert.Equal(t, 1, got.RoundTrips, "a batch of %d ops is one pipeline", len(ops))
		assert.Equal(t, want, got.Commands)
		for _, op := range ops {
			require.NoError(t, op.Err, "%v %s", op.Kind, op.Key)
		}
	})
}

// mixedBatch returns n ops cycling through every kind, on fresh keys, and
// the commands they should send.
func mixedBatch(n int) ([]store.Op, map[string]int) {
	ops := make([]store.Op, 0, n)
	want := map[string]int{}
	for i := range n {
		kinds := everyKind(fmt.Sprint("mixed:", i, ":"))
		op := kinds[i%len(kinds)]
		ops = append(ops, op)
		switch op.Kind {
		case store.OpGet:
			want["get"]++
		case store.OpSet, store.OpSetIfAbsent, store.OpGetOrSet:
			want["set"]++
		case store.OpCompareAndSwap:
			want["evalsha"]++
		case store.OpDelete:
			want["del"]++
		}
	}
	return ops, want
}

// TestBatch runs every kind of op on keys in every state, and checks each
// result against what the single-key method would give.
func TestBatch(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	s := redisstore.New(rdb)
	ctx := t.Context()
	large := bytes.Repeat([]byte("L"), 1000)
	for k, v := range map[string]string{
		"get:hit": "g", "sia:held": "x", "gos:held": "y", "gos:own": "mine",
		"cas:match": "o", "cas:other": "z", "cas:large": string(large), "cas:done": "new", "del:held": "d",
	} {
		require.NoError(t, rdb.Set(ctx, k, v, time.Minute).Err())
	}
	ops := []store.Op{
		{Kind: store.OpGet, Key: "get:hit"},
		{Kind: store.OpGet, Key: "get:miss"},
		{Kind: store.OpSet, Key: "set", Value: []byte("s"), TTL: 5 * time.Second},
		{Kind: store.OpSetIfAbsent, Key: "sia:empty", Value: []byte("v"), TTL: 5 * time.Second},
		{Kind: store.OpSetIfAbsent, Key: "sia:held", Value: []byte("v"), TTL: time.Minute},
		{Kind: store.OpGetOrSet, Key: "gos:empty", Value: []byte("v"), TTL: 5 * time.Second},
		{Kind: store.OpGetOrSet, Key: "gos:held", Value: []byte("v"), TTL: time.Minute},
		{Kind: store.OpGetOrSet, Key: "gos:own", Value: []byte("mine"), TTL: time.Minute},
		{Kind: store.OpCompareAndSwap, Key: "cas:match", Old: []byte("o"), Value: []byte("new"), TTL: 5 * time.Second},
		{Kind: store.OpCompareAndSwap, Key: "cas:other", Old: []byte("o"), Value: []byte("new"), TTL: time.Minute},
		{Kind: store.OpCompareAndSwap, Key: "cas:missing", Old: []byte("o"), Value: []byte("new"), TTL: time.Minute},
		{Kind: store.OpCompareAndSwap, Key: "cas:large", Old: large, Value: []byte("new"), TTL: 5 * time.Second},
		{Kind: store.OpCompareAndSwap, Key: "cas:done", Old: []byte("o"), Value: []byte("new"), TTL: time.Minute},
		{Kind: store.OpDelete, Key: "del:held"},
		{Kind: store.OpDelete, Key: "del:missing"},
		{Kind: store.OpSet, Key: "bad:ttl", Value: []byte("v"), TTL: time.Microsecond},
		{Kind: store.OpKind(99), Key: "bad:kind"},
		{Kind: store.OpGet, Key: "get:hit", Result: []byte("stale"), OK: true, Err: errors.New("stale")}, // results are reset
	}
	require.NoError(t, s.Batch(ctx, ops))

	type result struct {
		ok     bool
		result string
	}
	want := []result{
		{true, "g"}, {false, ""}, {false, ""},
		{true, ""}, {false, ""},
		{true, ""}, {false, "y"}, {true, ""},
		{true, ""}, {false, ""}, {false, ""}, {true, ""}, {true, ""},
		{false, ""}, {false, ""},
		{false, ""}, {false, ""},
		{true, "g"},
	}
	for i, op := range ops {
		switch op.Key {
		case "bad:ttl":
			assert.ErrorIs(t, op.Err, redisstore.ErrTTL)
		case "bad:kind":
			assert.ErrorIs(t, op.Err, errors.ErrUnsupported)
		default:
			assert.NoError(t, op.Err, "%v %s", op.Kind, op.Key)
		}
		assert.Equal(t, want[i].ok, op.OK, "%v %s: OK", op.Kind, op.Key)
		assert.Equal(t, want[i].result, string(op.Result), "%v %s: Result", op.Kind, op.Key)
		if want[i].result == "" {
			assert.Nil(t, op.Result, "%v %s: Result", op.Kind, op.Key)
		}
	}
	// What the server holds now.
	for k, v := range map[string]string{
		"set": "s", "sia:empty": "v", "sia:held": "x", "gos:empty": "v", "gos:held": "y",
		"cas:match": "new", "cas:other": "z", "cas:large": "new",
	} {
		wantHeld(t, rdb, k, v)
	}
	for _, k := range []string{"set", "sia:empty", "gos:empty", "cas:match", "cas:large"} {
		wantPTTL(t, rdb, k, 5*time.Second)
	}
	n, err := rdb.Exists(ctx, "del:held", "cas:missing", "bad:ttl", "bad:kind", "get:miss").Result()
	require.NoError(t, err)
	assert.Zero(t, n)

	require.NoError(t, s.Batch(ctx, nil), "an empty batch")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, s.Batch(cancelled, everyKind("c:")), context.Canceled)
}

// TestBatchAfterScriptFlush: the server forgot the script (a restart, a
// failover): the CompareAndSwap ops answered NOSCRIPT are sent again, by
// EVAL, in one more round trip.
func TestBatchAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	cnt := redistest.CountCommands(rdb)
	s := redisstore.New(rdb)
	ctx := t.Context()
	for range 2 {
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		require.NoError(t, rdb.MSet(ctx, "a", "1", "b", "1").Err())
		ops := []store.Op{
			{Kind: store.OpCompareAndSwap, Key: "a", Old: []byte("1"), Value: []byte("2"), TTL: time.Minute},
			{Kind: store.OpGet, Key: "b"},
			{Kind: store.OpCompareAndSwap, Key: "b", Old: []byte("x"), Value: []byte("2"), TTL: time.Minute},
		}
		cnt.Reset()
		require.NoError(t, s.Batch(ctx, ops))
		for _, op := range ops {
			require.NoError(t, op.Err)
		}
		got := cnt.Snapshot()
		assert.Equal(t, 2, got.RoundTrips)
		assert.Equal(t, 2, got.Commands["evalsha"])
		assert.Equal(t, 2, got.Commands["eval"])
		assert.Equal(t, 1, got.Commands["get"])
		assert.True(t, ops[0].OK)
		assert.True(t, ops[1].OK)
		assert.False(t, ops[2].OK)
		wantHeld(t, rdb, "a", "2")
		wantHeld(t, rdb, "b", "1")
	}
}

// replyError is an error reply from the server, as go-redis types one.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// oldServer answers SET with both NX and GET the way Redis before 7.0
// does: a syntax error.
type oldServer struct{ rejected atomic.Int32 }

func isSetNXGet(cmd redis.Cmder) bool {
	var nx, get bool
	for _, a := range cmd.Args()[1:] {
		switch a {
		case "nx":
			nx = true
		case "get":
			get = true
		}
	}
	return cmd.Name() == "set" && nx && get
}

func (*oldServer) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *oldServer) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isSetNXGet(cmd) {
			h.rejected.Add(1)
			cmd.SetErr(replyError("ERR syntax error"))
			return cmd.Err()
		}
		return next(ctx, cmd)
	}
}
func (h *oldServer) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var pass []redis.Cmder
		for _, cmd := range cmds {
			if isSetNXGet(cmd) {
				h.rejected.Add(1)
				cmd.SetErr(replyError("ERR syntax error"))
				continue
			}
			pass = append(pass, cmd)
		}
		if len(pass) == 0 {
			return nil
		}
		return next(ctx, pass)
	}
}

// TestOldServerFallsBackToAScript: a server that rejects SET NX GET gets
// the Lua equivalent, from then on, with the same results.
func TestOldServerFallsBackToAScript(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()

	t.Run("Single", func(t *testing.T) {
		rdb := srv.Client(t)
		old := &oldServer{}
		rdb.AddHook(old)
		s := redisstore.New(rdb)

		ok, err := s.SetIfAbsent(ctx, "single:k", []byte("a"), 5*time.Second)
		require.NoError(t, err)
		assert.True(t, ok)
		wantPTTL(t, rdb, "single:k", 5*time.Second)
		ok, err = s.SetIfAbsent(ctx, "single:k", []byte("a"), time.Minute)
		require.NoError(t, err)
		assert.True(t, ok, "the key holds our value")
		ok, err = s.SetIfAbsent(ctx, "single:k", []byte("b"), time.Minute)
		require.NoError(t, err)
		assert.False(t, ok)
		cur, stored, err := s.GetOrSet(ctx, "single:k", []byte("b"), time.Minute)
		require.NoError(t, err)
		assert.False(t, stored)
		assert.Equal(t, "a", string(cur))
		cur, stored, err = s.GetOrSet(ctx, "single:new", []byte("b"), time.Minute)
		require.NoError(t, err)
		assert.True(t, stored)
		assert.Nil(t, cur)
		wantHeld(t, rdb, "single:new", "b")

		assert.EqualValues(t, 1, old.rejected.Load(), "rejected once, then remembered")
		ops := []store.Op{{Kind: store.OpSetIfAbsent, Key: "single:b", Value: []byte("v"), TTL: time.Minute}}
		require.NoError(t, s.Batch(ctx, ops))
		require.NoError(t, ops[0].Err)
		assert.True(t, ops[0].OK)
		assert.EqualValues(t, 1, old.rejected.Load(), "a batch knows too")
	})

	t.Run("BatchFirst", func(t *testing.T) {
		rdb := srv.Client(t)
		old := &oldServer{}
		rdb.AddHook(old)
		s := redisstore.New(rdb)
		require.NoError(t, rdb.Set(ctx, "batch:held", "h", time.Minute).Err())
		ops := []store.Op{
			{Kind: store.OpSetIfAbsent, Key: "batch:a", Value: []byte("v"), TTL: 5 * time.Second},
			{Kind: store.OpGet, Key: "batch:held"},
			{Kind: store.OpGetOrSet, Key: "batch:held", Value: []byte("v"), TTL: time.Minute},
			{Kind: store.OpGetOrSet, Key: "batch:b", Value: []byte("v"), TTL: time.Minute},
		}
		require.NoError(t, s.Batch(ctx, ops))
		for _, op := range ops {
			require.NoError(t, op.Err, "%v %s", op.Kind, op.Key)
		}
		assert.True(t, ops[0].OK)
		assert.True(t, ops[1].OK)
		assert.Equal(t, "h", string(ops[1].Result))
		assert.False(t, ops[2].OK)
		assert.Equal(t, "h", string(ops[2].Result))
		assert.True(t, ops[3].OK)
		wantPTTL(t, rdb, "batch:a", 5*time.Second)
		assert.EqualValues(t, 3, old.rejected.Load())
		ok, err := s.SetIfAbsent(ctx, "batch:a", []byte("v"), time.Minute)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.EqualValues(t, 3, old.rejected.Load(), "remembered from the batch")
	})
}

// TestTooLarge: a server whose proto-max-bulk-len is below the value
// refuses it and drops the connection; the store's error matches
// store.ErrTooLarge, whether the client read the refusal or only saw the
// connection reset while still sending.
func TestTooLarge(t *testing.T) {
	srv := redistest.Start(t, "--proto-max-bulk-len", "1mb")
	ctx := t.Context()
	writes := []struct {
		name string
		call func(s *redisstore.Store, v []byte) error
	}{
		{"Set", func(s *redisstore.Store, v []byte) error { return s.Set(ctx, "big", v, time.Minute) }},
		{"SetIfAbsent", func(s *redisstore.Store, v []byte) error {
			_, err := s.SetIfAbsent(ctx, "big", v, time.Minute)
			return err
		}},
		{"GetOrSet", func(s *redisstore.Store, v []byte) error {
			_, _, err := s.GetOrSet(ctx, "big", v, time.Minute)
			return err
		}},
		{"CompareAndSwap", func(s *redisstore.Store, v []byte) error {
			_, err := s.CompareAndSwap(ctx, "big", []byte("old"), v, time.Minute)
			return err
		}},
		{"Batch", func(s *redisstore.Store, v []byte) error {
			ops := []store.Op{{Kind: store.OpSet, Key: "big", Value: v, TTL: time.Minute}}
			if err := s.Batch(ctx, ops); err != nil {
				return err
			}
			return ops[0].Err
		}},
	}
	for _, size := range []int{1<<20 + 1, 8 << 20} {
		v := bytes.Repeat([]byte("x"), size)
		for _, w := range writes {
			// A fresh store each time, so the first write meets the server.
			s := redisstore.New(srv.Client(t))
			err := w.call(s, v)
			assert.ErrorIs(t, err, store.ErrTooLarge, "%s of %d bytes", w.name, size)
			t.Logf("%s of %d bytes: %v", w.name, size, err)
			err = w.call(s, v)
			assert.ErrorIs(t, err, store.ErrTooLarge, "%s of %d bytes, again", w.name, size)
			require.NoError(t, s.Set(ctx, "small", []byte("v"), time.Minute), "small values still go through")
		}
	}
	assert.Equal(t, 512<<20, redisstore.New(srv.Client(t)).Limits().MaxEntrySize)
}
