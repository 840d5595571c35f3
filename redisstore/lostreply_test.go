package redisstore_test

// A command that reached the server and took effect, but whose reply the
// connection lost: go-redis retries it on a new connection, and the retry
// finds the key holding the value the first attempt wrote.

import (
	"bytes"
	"context"
	"net"
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

// lossyProxy forwards between clients and a redis-server, and can lose
// the reply to one command: it forwards the command, swallows what the
// server answers and closes the client's connection.
type lossyProxy struct {
	Addr   string
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu      sync.Mutex
	pattern []byte // commands containing it are counted in seen
	armed   bool   // lose the reply to the next one
	seen    int
}

func startLossyProxy(t *testing.T, target string) *lossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &lossyProxy{Addr: ln.Addr().String(), target: target, ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		p.wg.Wait()
	})
	return p
}

// LoseReplyTo loses the reply to the next command whose bytes contain
// pattern, and from then on counts those commands.
func (p *lossyProxy) LoseReplyTo(pattern string) {
	p.mu.Lock()
	p.pattern, p.armed, p.seen = []byte(pattern), true, 0
	p.mu.Unlock()
}

// Seen returns how many commands containing the pattern were forwarded.
func (p *lossyProxy) Seen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

// claim counts a chunk of commands and reports whether its reply is to
// be lost. go-redis writes a command (or a pipeline) in one go and waits
// for its replies, so the next bytes from the server answer it.
func (p *lossyProxy) claim(chunk []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pattern == nil || !bytes.Contains(chunk, p.pattern) {
		return false
	}
	p.seen++
	lose := p.armed
	p.armed = false
	return lose
}

func (p *lossyProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	var lose atomic.Bool
	closeBoth := func() { _ = client.Close(); _ = server.Close() }
	p.wg.Go(func() { // server to client
		defer closeBoth()
		buf := make([]byte, 64<<10)
		for {
			n, err := server.Read(buf)
			if err != nil {
				return
			}
			if lose.Load() {
				return // the reply, swallowed: the command took effect
			}
			if _, err := client.Write(buf[:n]); err != nil {
				return
			}
		}
	})
	defer closeBoth()
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		if err != nil {
			return
		}
		if p.claim(buf[:n]) {
			lose.Store(true)
		}
		if _, err := server.Write(buf[:n]); err != nil {
			return
		}
	}
}

func TestLostReplyIsRetriedIdempotently(t *testing.T) {
	srv := redistest.Start(t)
	proxy := startLossyProxy(t, srv.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr}) // defaults: go-redis retries
	t.Cleanup(func() { _ = rdb.Close() })
	direct := srv.Client(t)
	s := redisstore.New(rdb)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Load the scripts, so the calls below are one command each.
	_, err := s.CompareAndSwap(ctx, "warm", []byte("a"), []byte("b"), time.Minute)
	require.NoError(t, err)

	t.Run("SETNX", func(t *testing.T) {
		// What a plain SET NX makes of it: the retry finds our value, and
		// reports it as held by someone else.
		proxy.LoseReplyTo("lost:setnx")
		ok, err := rdb.SetNX(ctx, "lost:setnx", "v", time.Minute).Result()
		require.NoError(t, err)
		require.Equal(t, 2, proxy.Seen(), "the command was sent twice: go-redis retried it")
		assert.False(t, ok, "SET NX reports false to the client that set the key")
	})

	t.Run("SetIfAbsent", func(t *testing.T) {
		proxy.LoseReplyTo("lost:sia")
		ok, err := s.SetIfAbsent(ctx, "lost:sia", []byte("token"), time.Minute)
		require.NoError(t, err)
		require.Equal(t, 2, proxy.Seen(), "go-redis retried")
		assert.True(t, ok, "stored: the key holds our own value")
		wantHeld(t, direct, "lost:sia", "token")
	})

	t.Run("GetOrSet", func(t *testing.T) {
		proxy.LoseReplyTo("lost:gos")
		cur, stored, err := s.GetOrSet(ctx, "lost:gos", []byte("token"), time.Minute)
		require.NoError(t, err)
		require.Equal(t, 2, proxy.Seen(), "go-redis retried")
		assert.True(t, stored)
		assert.Nil(t, cur)
	})

	t.Run("CompareAndSwap", func(t *testing.T) {
		require.NoError(t, direct.Set(ctx, "lost:cas", "lease", time.Minute).Err())
		proxy.LoseReplyTo("lost:cas")
		swapped, err := s.CompareAndSwap(ctx, "lost:cas", []byte("lease"), []byte("entry"), time.Minute)
		require.NoError(t, err)
		require.Equal(t, 2, proxy.Seen(), "go-redis retried")
		assert.True(t, swapped, "the retry finds the key holding value")
		wantHeld(t, direct, "lost:cas", "entry")
	})

	t.Run("Batch", func(t *testing.T) {
		require.NoError(t, direct.Set(ctx, "lost:b:cas", "lease", time.Minute).Err())
		ops := []store.Op{
			{Kind: store.OpSetIfAbsent, Key: "lost:b:sia", Value: []byte("t1"), TTL: time.Minute},
			{Kind: store.OpGetOrSet, Key: "lost:b:gos", Value: []byte("t2"), TTL: time.Minute},
			{Kind: store.OpCompareAndSwap, Key: "lost:b:cas", Old: []byte("lease"), Value: []byte("entry"), TTL: time.Minute},
		}
		proxy.LoseReplyTo("lost:b:")
		require.NoError(t, s.Batch(ctx, ops))
		require.Equal(t, 2, proxy.Seen(), "go-redis retried the pipeline")
		for _, op := range ops {
			require.NoError(t, op.Err)
			assert.True(t, op.OK, "%v", op.Kind)
			assert.Nil(t, op.Result, "%v", op.Kind)
		}
	})
}
