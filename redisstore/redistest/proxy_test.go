package redistest

import (
	"bytes"
	"context"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// proxied starts a server, a proxy in front of it, a go-redis client built
// with its defaults through the proxy, and a direct client to look at the
// server behind the proxy's back.
func proxied(t *testing.T) (p *Proxy, rdb, direct *redis.Client) {
	t.Helper()
	srv := Start(t)
	p = StartProxy(t, srv.Addr)
	rdb = redis.NewClient(&redis.Options{Addr: p.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	require.NoError(t, rdb.Ping(t.Context()).Err(), "warm up: one pooled connection")
	return p, rdb, srv.Client(t)
}

func hasArg(args []string, want string) bool {
	for _, a := range args[1:] {
		if strings.EqualFold(a, want) {
			return true
		}
	}
	return false
}

func TestProxyPassthrough(t *testing.T) {
	t.Parallel()
	p, rdb, direct := proxied(t)
	ctx := t.Context()

	require.NoError(t, rdb.Set(ctx, "k", "v", 0).Err())
	got, err := rdb.Get(ctx, "k").Result()
	require.NoError(t, err)
	assert.Equal(t, "v", got)
	_, err = rdb.Get(ctx, "missing").Result()
	assert.ErrorIs(t, err, redis.Nil)

	big := strings.Repeat("0123456789", 100_000) // many chunks each way
	require.NoError(t, rdb.Set(ctx, "big", big, 0).Err())
	got, err = rdb.Get(ctx, "big").Result()
	require.NoError(t, err)
	assert.True(t, got == big, "a 1 MB value survives the trip both ways")

	cmds, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for range 100 {
			pipe.Incr(ctx, "n")
		}
		pipe.HSet(ctx, "h", "a", "1", "b", "2")
		pipe.HGetAll(ctx, "h") // a RESP3 map
		return nil
	})
	require.NoError(t, err)
	assert.EqualValues(t, 100, cmds[99].(*redis.IntCmd).Val())
	assert.Equal(t, map[string]string{"a": "1", "b": "2"}, cmds[101].(*redis.MapStringStringCmd).Val())
	assert.Equal(t, 100, p.Count("INCR"), "every pipelined command counted")
	assert.Equal(t, 100, p.Count("incr"), "names are case-insensitive")

	sub := rdb.Subscribe(ctx, "ch")
	defer sub.Close()
	_, err = sub.Receive(ctx) // the subscription is live
	require.NoError(t, err)
	require.NoError(t, direct.Publish(ctx, "ch", "hello").Err())
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := sub.ReceiveMessage(rctx)
	require.NoError(t, err)
	assert.Equal(t, "hello", msg.Payload, "pub/sub pushes pass through")
	assert.Equal(t, 1, p.Count("SUBSCRIBE"))

	// A fault armed now is claimed by the next command on a connection
	// whose replies the proxy can match, never by the subscriber's.
	require.NoError(t, rdb.Set(ctx, "after", "pubsub", 0).Err())
	got, err = rdb.Get(ctx, "after").Result()
	require.NoError(t, err)
	assert.Equal(t, "pubsub", got)
	assert.GreaterOrEqual(t, p.Conns(), 2, "the pooled connection and the subscriber's")
	t.Logf("commands seen: %v", p.Commands())
}

func TestProxyLatencyDelaysEachWay(t *testing.T) {
	t.Parallel()
	p, rdb, _ := proxied(t)
	ctx := t.Context()
	const d = 50 * time.Millisecond

	start := time.Now()
	require.ErrorIs(t, rdb.Get(ctx, "k").Err(), redis.Nil) // a miss
	healthy := time.Since(start)

	p.SetLatency(d)
	start = time.Now()
	err := rdb.Get(ctx, "k").Err()
	slow := time.Since(start)
	require.ErrorIs(t, err, redis.Nil)
	t.Logf("GET round trip: %v healthy, %v with %v latency each way", healthy, slow, d)
	assert.GreaterOrEqual(t, slow, 2*d, "the command and its reply are each delayed")

	p.Heal()
	require.ErrorIs(t, rdb.Get(ctx, "k").Err(), redis.Nil)
}

// The failure the library must defend against: a partition makes a
// default go-redis client overrun its caller's context by its ReadTimeout.
func TestProxyBlackholeOutlastsContext(t *testing.T) {
	t.Parallel()
	p, rdb, _ := proxied(t)
	ctx := t.Context()
	const budget = 100 * time.Millisecond

	fresh := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer fresh.Close()
	p.Blackhole(true)
	for _, tc := range []struct {
		name string
		rdb  *redis.Client
	}{
		{"pooled connection", rdb},
		{"new client", fresh},
	} {
		cctx, cancel := context.WithTimeout(ctx, budget)
		start := time.Now()
		err := tc.rdb.Get(cctx, "k").Err()
		took := time.Since(start)
		cancel()
		t.Logf("%s: GET with a %v context returned after %v: %v (ctx.Err() = %v)", tc.name, budget, took, err, cctx.Err())
		assert.Error(t, err, tc.name)
		assert.NotErrorIs(t, err, redis.Nil, "%s: no answer is not a miss", tc.name)
		assert.Greater(t, took, 10*budget, "%s: the default client ignores its context deadline", tc.name)
	}

	p.Heal()
	require.ErrorIs(t, rdb.Get(ctx, "k").Err(), redis.Nil, "the client recovers on a new connection")
}

// Blackhole's documented edges, on raw connections so no client timer
// interferes: a connection that lost bytes stays dead, an idle one resumes.
func TestProxyBlackholeKillsOnlyConnectionsThatLostBytes(t *testing.T) {
	t.Parallel()
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", p.Addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// ping waits for an answer until its deadline: long when one must come,
	// short when none may (no answer ever comes then, so a short wait
	// cannot fail a correct proxy).
	ping := func(c net.Conn, wait time.Duration) (string, error) {
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	idle, lossy := dial(), dial()
	const answer, silence = 10 * time.Second, 200 * time.Millisecond
	for _, c := range []net.Conn{idle, lossy} {
		got, err := ping(c, answer)
		require.NoError(t, err)
		require.Equal(t, "+PONG\r\n", got)
	}

	p.Blackhole(true)
	newcomer := dial()
	_, err := ping(lossy, silence)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "nothing answers in the blackhole")
	_, err = ping(newcomer, silence)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "a new connection is accepted and then nothing")
	// Heal only once the proxy has swallowed both PINGs.
	require.Eventually(t, func() bool { return deadConns(p) == 2 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, 3, p.Conns(), "blackholed connections stay open")

	p.Heal()
	got, err := ping(idle, answer)
	require.NoError(t, err, "a connection idle through the partition resumes")
	assert.Equal(t, "+PONG\r\n", got)
	for name, c := range map[string]net.Conn{"lossy": lossy, "newcomer": newcomer} {
		_, err = ping(c, silence)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "%s stays dead after Heal", name)
	}
	fresh := dial()
	got, err = ping(fresh, answer)
	require.NoError(t, err)
	assert.Equal(t, "+PONG\r\n", got)
	assert.Equal(t, 4, p.Count("PING"), "blackholed commands are not counted")
}

func deadConns(p *Proxy) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if c.dead.Load() {
			n++
		}
	}
	return n
}

func TestProxyResetAllAndRefuseNew(t *testing.T) {
	t.Parallel()
	srv := Start(t)
	p := StartProxy(t, srv.Addr)
	var dials atomic.Int32
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr, Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}})
	defer rdb.Close()
	ctx := t.Context()
	require.NoError(t, rdb.Ping(ctx).Err())

	// A reset of idle pooled connections alone.
	p.ResetAll()
	assert.Equal(t, 0, p.Conns())
	gets, d0 := p.Count("GET"), dials.Load()
	err := rdb.Get(ctx, "k").Err()
	t.Logf("GET after ResetAll of the idle pooled connection: %v; GETs forwarded: %d, dials: %d", err, p.Count("GET")-gets, dials.Load()-d0)

	// A reset with every reconnection refused too: an outage.
	p.RefuseNew(true)
	p.ResetAll()
	assert.Equal(t, 0, p.Conns())
	d0 = dials.Load()
	start := time.Now()
	err = rdb.Get(ctx, "k").Err()
	t.Logf("GET while connections are reset and refused: %v after %v and %d dials", err, time.Since(start), dials.Load()-d0)
	require.Error(t, err)
	assert.NotErrorIs(t, err, redis.Nil)
	assert.Equal(t, 0, p.Conns(), "refused connections never open")

	// The handshake completes and the reset follows, on loopback sometimes
	// before connect returns.
	raw, err := net.Dial("tcp", p.Addr)
	if err == nil {
		_, err = raw.Read(make([]byte, 1))
		_ = raw.Close()
	}
	assert.Error(t, err)
	t.Logf("a raw connection refused: %v", err)

	p.Heal()
	require.ErrorIs(t, rdb.Get(ctx, "k").Err(), redis.Nil, "the client recovers after Heal")
	assert.Equal(t, 1, p.Conns())
}

func TestProxyCutNextReply(t *testing.T) {
	t.Parallel()
	p, rdb, direct := proxied(t)
	ctx := t.Context()
	value := strings.Repeat("v", 1000)
	require.NoError(t, direct.Set(ctx, "big", value, 0).Err())

	hellos := p.Count("HELLO")
	p.CutNextReply(10) // "$1000\r\nvvv" and then EOF
	got, err := rdb.Get(ctx, "big").Result()
	t.Logf("default client, GET whose reply is cut after 10 bytes: len(value)=%d err=%v; GETs forwarded: %d, new connections: %d",
		len(got), err, p.Count("GET"), p.Count("HELLO")-hellos)
	if err == nil {
		assert.Equal(t, value, got, "never a cut-short value")
		assert.Equal(t, 2, p.Count("GET"), "a success after a cut is a retry")
		assert.Equal(t, 1, p.Count("HELLO")-hellos, "on a new connection")
	}

	noRetry := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
	defer noRetry.Close()
	require.NoError(t, noRetry.Ping(ctx).Err())
	p.CutNextReply(10)
	got, err = noRetry.Get(ctx, "big").Result()
	t.Logf("client with MaxRetries -1, same cut: len(value)=%d err=%v", len(got), err)
	require.Error(t, err, "the cut reaches a client that does not retry")
	assert.NotErrorIs(t, err, redis.Nil)

	isGet := func(args []string) bool { return args[0] == "get" }
	p.CutNextReplyTo(1<<20, isGet)              // longer than the reply: all of it, then the close
	got, err = noRetry.Get(ctx, "big").Result() // after a HELLO on a new connection
	require.NoError(t, err)
	assert.Equal(t, value, got)
	err = noRetry.Get(ctx, "big").Err()
	t.Logf("the next GET on a connection closed after a whole reply: %v", err)
}

// The finding that shapes the library: with a lost reply, go-redis's retry
// turns "I set it" into "someone else holds it".
func TestProxyLoseNextReply(t *testing.T) {
	t.Parallel()
	p, rdb, direct := proxied(t)
	ctx := t.Context()
	setNX := func(args []string) bool { return args[0] == "set" && hasArg(args, "NX") }

	t.Run("SetNX", func(t *testing.T) {
		sets := p.Count("SET")
		p.LoseNextReply(setNX)
		ok, err := rdb.SetNX(ctx, "lock1", "token1", 5*time.Second).Result()
		t.Logf("SetNX whose first reply was lost: ok=%v err=%v; SETs forwarded: %d", ok, err, p.Count("SET")-sets)
		held, gerr := direct.Get(ctx, "lock1").Result()
		require.NoError(t, gerr)
		assert.Equal(t, "token1", held, "the SET took effect on the server")
		assert.True(t, err != nil || !ok, "the client was never told it won")
	})

	t.Run("SET NX GET", func(t *testing.T) {
		sets := p.Count("SET")
		p.LoseNextReply(setNX)
		old, err := rdb.SetArgs(ctx, "lock2", "token2", redis.SetArgs{Mode: "NX", Get: true, TTL: 5 * time.Second}).Result()
		t.Logf("SET NX GET whose first reply was lost: old=%q err=%v; SETs forwarded: %d", old, err, p.Count("SET")-sets)
		held, gerr := direct.Get(ctx, "lock2").Result()
		require.NoError(t, gerr)
		assert.Equal(t, "token2", held, "the SET took effect on the server")
		assert.NotErrorIs(t, err, redis.Nil, "the client never saw the nil that means it won")
		if err == nil {
			assert.Equal(t, "token2", old, "the retry reads back our own token: a loss the caller can recognise")
		}
	})

	t.Run("pipeline", func(t *testing.T) {
		incrs := p.Count("INCR")
		p.LoseNextReply(func(args []string) bool { return args[0] == "incr" && args[1] == "p1" })
		cmds, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Incr(ctx, "p1")
			pipe.Incr(ctx, "p2")
			return nil
		})
		p1, _ := direct.Get(ctx, "p1").Int()
		p2, _ := direct.Get(ctx, "p2").Int()
		t.Logf("pipeline INCR p1 (reply lost), INCR p2: err=%v replies=%v; the server holds p1=%d p2=%d; INCRs forwarded: %d", err, cmds, p1, p2, p.Count("INCR")-incrs)
		assert.Equal(t, p.Count("INCR")-incrs, p1+p2, "every forwarded INCR took effect")
		if err == nil {
			assert.EqualValues(t, p1, cmds[0].(*redis.IntCmd).Val())
			assert.EqualValues(t, p2, cmds[1].(*redis.IntCmd).Val())
		}
	})

	t.Run("INCR", func(t *testing.T) {
		incrs := p.Count("INCR")
		p.LoseNextReply(func(args []string) bool { return args[0] == "incr" })
		n, err := rdb.Incr(ctx, "counter").Result()
		stored, gerr := direct.Get(ctx, "counter").Int()
		require.NoError(t, gerr)
		t.Logf("one Incr call whose first reply was lost: got %d err=%v; the server holds %d; INCRs forwarded: %d", n, err, stored, p.Count("INCR")-incrs)
		assert.Equal(t, p.Count("INCR")-incrs, stored, "every forwarded INCR took effect")
		if err == nil {
			assert.EqualValues(t, stored, n)
		}
	})
}

// Faults are claimed in order by matching commands only.
func TestProxyLoseNextReplyMatchesOnlyItsCommand(t *testing.T) {
	t.Parallel()
	p, rdb, _ := proxied(t)
	ctx := t.Context()
	noRetry := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
	defer noRetry.Close()
	require.NoError(t, noRetry.Ping(ctx).Err())

	p.LoseNextReply(func(args []string) bool { return args[0] == "del" })
	cmds, err := noRetry.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, "a", "1", 0)
		pipe.Get(ctx, "a")
		pipe.Del(ctx, "a")
		pipe.Get(ctx, "a")
		return nil
	})
	t.Logf("pipeline SET, GET, DEL (reply lost), GET: %v", err)
	require.Error(t, err)
	assert.Equal(t, "1", cmds[1].(*redis.StringCmd).Val(), "replies before the lost one arrive")
	assert.Error(t, cmds[2].Err(), "the DEL's reply is lost")
	assert.NotErrorIs(t, cmds[3].Err(), redis.Nil, "and every reply after it")

	p.Heal()
	require.ErrorIs(t, rdb.Get(ctx, "a").Err(), redis.Nil, "the DEL took effect")
}

func TestProxyCloseLeavesNoGoroutines(t *testing.T) {
	srv := Start(t)
	p, err := NewProxy(srv.Addr)
	require.NoError(t, err)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
	defer rdb.Close()
	ctx := t.Context()
	require.NoError(t, rdb.Ping(ctx).Err())
	sub := rdb.Subscribe(ctx, "ch")
	defer sub.Close()
	_, err = sub.Receive(ctx)
	require.NoError(t, err)

	// Every kind of goroutine the proxy runs: forwarding pairs with delayed
	// chunks queued, a blackholed connection, a sink for a new one.
	p.SetLatency(time.Hour)
	slow := make(chan error, 1)
	go func() { slow <- rdb.Ping(ctx).Err() }()
	hole, err := net.Dial("tcp", p.Addr)
	require.NoError(t, err)
	defer hole.Close()
	for p.Conns() < 3 { // the pooled connection, the subscriber, hole
		runtime.Gosched()
	}
	p.Blackhole(true)
	sink, err := net.Dial("tcp", p.Addr)
	require.NoError(t, err)
	defer sink.Close()
	for p.Conns() < 4 {
		runtime.Gosched()
	}

	p.Close()
	p.Close() // twice is fine
	assert.Error(t, <-slow, "the command held by the latency fails at Close")
	assert.Equal(t, 0, p.Conns())
	_, err = net.Dial("tcp", p.Addr)
	assert.Error(t, err, "no longer listening")

	var stacks []byte
	for deadline := time.Now().Add(5 * time.Second); ; runtime.Gosched() {
		stacks = make([]byte, 1<<20)
		stacks = stacks[:runtime.Stack(stacks, true)]
		if !proxyFrames(stacks) || time.Now().After(deadline) {
			break
		}
	}
	assert.False(t, proxyFrames(stacks), "goroutines left after Close:\n%s", stacks)
}

func proxyFrames(stacks []byte) bool {
	return bytes.Contains(stacks, []byte("redistest.(*Proxy)")) || bytes.Contains(stacks, []byte("redistest.(*proxyConn)"))
}

func TestReplyFramer(t *testing.T) {
	t.Parallel()
	replies := []string{
		"+OK\r\n", "-ERR bad\r\n", ":42\r\n", "_\r\n", ",3.14\r\n", "#t\r\n",
		"(123456789012345678901234567890\r\n",
		"$5\r\nhello\r\n", "$0\r\n\r\n", "$-1\r\n", "$4\r\n\r\n\r\n\r\n", // CRLF inside a value
		"!3\r\nerr\r\n", "=7\r\ntxt:abc\r\n",
		"*-1\r\n", "*0\r\n", "*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
		"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n", "%0\r\n",
		"~2\r\n+x\r\n+y\r\n",
		">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
		"|1\r\n+ttl\r\n:3600\r\n*2\r\n:1\r\n:2\r\n", // an attribute belongs to its value
		"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n",      // also inside an aggregate
		"|0\r\n+OK\r\n",
		"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n",
		"*?\r\n:1\r\n$?\r\n;1\r\na\r\n;0\r\n~?\r\n.\r\n.\r\n",
		"%?\r\n+a\r\n:1\r\n.\r\n",
	}
	stream := strings.Join(replies, "")
	var want []int
	end := 0
	for _, r := range replies {
		end += len(r)
		want = append(want, end)
	}
	for size := 1; size <= len(stream); size++ {
		var f replyFramer
		var got []int
		off := 0
		for c := 0; c < len(stream); c += size {
			b := []byte(stream[c:min(c+size, len(stream))])
			for len(b) > 0 {
				n, done, err := f.feed(b)
				require.NoError(t, err, "chunk size %d", size)
				require.Positive(t, n)
				b = b[n:]
				off += n
				if done {
					got = append(got, off)
				}
			}
		}
		require.Equal(t, want, got, "reply ends with chunks of %d bytes", size)
	}

	for _, bad := range []string{"?x\r\n", "$abc\r\n", ".\r\n", "|-1\r\n", "+OK\n", "\r\n", "$?\r\n:1\r\n", "!?\r\n"} {
		var f replyFramer
		_, _, err := f.feed([]byte(bad))
		assert.ErrorIs(t, err, errProtocol, "%q", bad)
	}
}

func TestCommandParser(t *testing.T) {
	t.Parallel()
	stream := "*3\r\n$3\r\nset\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n" + // CRLF inside a value
		"*1\r\n$4\r\nPING\r\n" +
		"*0\r\n" + "\r\n" + // ignored, as Redis does
		"get  k\r\n" + // inline
		"*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
	want := [][]string{{"set", "k", "a\r\nb"}, {"ping"}, {"get", "k"}, {"get", ""}}
	for size := 1; size <= len(stream); size++ {
		var p commandParser
		var got [][]string
		for c := 0; c < len(stream); c += size {
			err := p.feed([]byte(stream[c:min(c+size, len(stream))]), func(args []string) { got = append(got, args) })
			require.NoError(t, err)
		}
		require.Equal(t, want, got, "chunks of %d bytes", size)
	}
	for _, bad := range []string{"*2\r\n:1\r\n", "*1\r\n$1\r\nabc\r\n", "*x\r\n", "*1\r\n$-1\r\n", "*1\r\n" + strings.Repeat("$", maxLine+1)} {
		var p commandParser
		err := p.feed([]byte(bad), func([]string) { t.Errorf("%q: no command expected", bad) })
		assert.ErrorIs(t, err, errProtocol, "%q", bad)
	}
}
