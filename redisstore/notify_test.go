package redisstore_test

// Tests of Store.Notify against real redis-servers: single node in both
// protocols, a Cluster, a Sentinel failover and a Ring. Changes are made
// by a "foreign" client (a plain go-redis client, as redis-cli would be)
// unless the test says otherwise. Waits have generous deadlines and no
// assertion is on time: measured times go to t.Log.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/readthrough-go/readthrough/store"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/push"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

const (
	// waitLong bounds every wait for something the link must do: connect,
	// report a write, notice a failure.
	waitLong = 10 * time.Second
	// linkPrefix starts the names of the link's connections in CLIENT LIST.
	linkPrefix = "readthrough-notify-"
)

// notifyEvent is one call to a listener.
type notifyEvent struct {
	kind byte // 'C' Connected, 'K' Changed, 'D' Disconnected
	key  string
	err  error
	at   time.Time
}

// recListener records what it is told, and checks as it goes that the
// Notifier keeps its promises: Connected(true) and Disconnected alternate,
// starting with Connected; keys are under the prefix; nothing comes after
// stop.
type recListener struct {
	t         *testing.T
	prefix    string
	onChanged func(key string) // optional, called first

	mu     sync.Mutex
	events []notifyEvent
	up     bool
	wake   chan struct{}

	stopped atomic.Bool
}

func newRecListener(t *testing.T, prefix string) *recListener {
	return &recListener{t: t, prefix: prefix, wake: make(chan struct{}, 1)}
}

func (r *recListener) record(e notifyEvent) {
	if r.stopped.Load() {
		r.t.Errorf("listener %q called after stop: %c %q %v", r.prefix, e.kind, e.key, e.err)
	}
	e.at = time.Now()
	r.mu.Lock()
	switch e.kind {
	case 'C':
		if r.up {
			r.t.Errorf("listener %q: Connected twice without Disconnected", r.prefix)
		}
		r.up = true
	case 'D':
		if !r.up {
			r.t.Errorf("listener %q: Disconnected(%v) while not connected", r.prefix, e.err)
		}
		r.up = false
	case 'K':
		if !strings.HasPrefix(e.key, r.prefix) {
			r.t.Errorf("listener %q told of %q, outside its prefix", r.prefix, e.key)
		}
	}
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recListener) Connected(complete bool) {
	if !complete {
		r.t.Errorf("Connected(false): Redis tracking reports every writer")
	}
	r.record(notifyEvent{kind: 'C'})
}

func (r *recListener) Changed(key string) {
	if r.onChanged != nil {
		r.onChanged(key)
	}
	r.record(notifyEvent{kind: 'K', key: key})
}

func (r *recListener) Disconnected(err error) {
	if err == nil {
		r.t.Errorf("Disconnected(nil): want a reason")
	}
	r.record(notifyEvent{kind: 'D', err: err})
}

// count returns how many calls of kind (for key, if kind is 'K') were made.
func (r *recListener) count(kind byte, key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.kind == kind && (kind != 'K' || e.key == key) {
			n++
		}
	}
	return n
}

// last returns the latest call of kind, and whether there was one.
func (r *recListener) last(kind byte) (notifyEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].kind == kind {
			return r.events[i], true
		}
	}
	return notifyEvent{}, false
}

// wait returns once cond holds; it fails the test after waitLong.
func (r *recListener) wait(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.NewTimer(waitLong)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-r.wake:
		case <-deadline.C:
			if !cond() {
				r.t.Fatalf("listener %q: %s: not within %v", r.prefix, what, waitLong)
			}
			return
		}
	}
}

func (r *recListener) waitCount(kind byte, key string, n int, what string) {
	r.t.Helper()
	r.wait(what, func() bool { return r.count(kind, key) >= n })
}

// waitKey waits until key has been reported more than n times.
func (r *recListener) waitKey(key string, n int, what string) {
	r.t.Helper()
	r.waitCount('K', key, n+1, what+": Changed("+key+")")
}

// changes makes a change through write and waits for key's report.
func (r *recListener) changes(key, what string, write func() error) {
	r.t.Helper()
	n := r.count('K', key)
	require.NoError(r.t, write(), what)
	r.waitKey(key, n, what)
}

// listen registers a recListener for prefix, waits for Connected, and
// stops it when the test ends.
func listen(t *testing.T, n store.Notifier, prefix string) (*recListener, func()) {
	t.Helper()
	r := newRecListener(t, prefix)
	return r, listenWith(t, n, r)
}

func listenWith(t *testing.T, n store.Notifier, r *recListener) func() {
	t.Helper()
	stop, err := n.Notify(r.prefix, r)
	require.NoError(t, err)
	var once sync.Once
	stopOnce := func() {
		once.Do(func() {
			stop()
			r.stopped.Store(true)
		})
	}
	t.Cleanup(stopOnce)
	r.waitCount('C', "", 1, "Connected")
	return stopOnce
}

// forEachProtocol runs f for a client speaking RESP3 (go-redis's default)
// and one speaking RESP2.
func forEachProtocol(t *testing.T, f func(t *testing.T, proto int)) {
	for _, proto := range []int{3, 2} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) { f(t, proto) })
	}
}

func newClient(t testing.TB, addr string, proto int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, Protocol: proto})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// linkConns returns the id and name of each connection of the link, from
// CLIENT LIST.
func linkConns(t *testing.T, rdb redis.Cmdable) map[string]int64 {
	t.Helper()
	list, err := rdb.ClientList(context.Background()).Result()
	require.NoError(t, err)
	conns := map[string]int64{}
	for line := range strings.Lines(list) {
		var id int64
		var name string
		for f := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "id":
				id, _ = strconv.ParseInt(v, 10, 64)
			case "name":
				name = v
			}
		}
		if strings.HasPrefix(name, linkPrefix) {
			conns[name] = id
		}
	}
	return conns
}

// set returns a write of key through rdb, for recListener.changes.
func set(rdb redis.Cmdable, key string) func() error {
	return func() error { return rdb.Set(context.Background(), key, "v", time.Minute).Err() }
}

// TestNotifyReportsEveryChange: whoever changes a key under the prefix,
// and however, the listener is told; keys outside it are not reported.
func TestNotifyReportsEveryChange(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto int) {
		srv := redistest.Start(t)
		s := redisstore.New(newClient(t, srv.Addr, proto))
		foreign := srv.Client(t)
		ctx := context.Background()
		r, _ := listen(t, s, "ns:")

		r.changes("ns:a", "a foreign SET", set(foreign, "ns:a"))
		r.changes("ns:a", "a foreign overwrite", set(foreign, "ns:a"))
		r.changes("ns:a", "a foreign DEL", func() error { return foreign.Del(ctx, "ns:a").Err() })
		r.changes("ns:own", "the store's own Set", func() error {
			return s.Set(ctx, "ns:own", []byte("v"), time.Minute)
		})
		r.changes("ns:own", "the store's own Delete", func() error { return s.Delete(ctx, "ns:own") })

		// An expiry: the SET is reported, then the server's expiry.
		r.changes("ns:exp", "a SET PX 50", func() error {
			return foreign.Set(ctx, "ns:exp", "v", 50*time.Millisecond).Err()
		})
		r.waitKey("ns:exp", 1, "an expiry")

		// Outside the prefix: written first, so its report would come
		// before the marker's on the same connection.
		for _, k := range []string{"other:k", "ns", "n", "NS:k"} {
			require.NoError(t, set(foreign, k)())
			require.NoError(t, foreign.Del(ctx, k).Err())
		}
		r.changes("ns:marker", "a foreign SET", set(foreign, "ns:marker"))
		assert.Zero(t, r.count('D', ""), "no Disconnected on a healthy link")
	})
}

// TestNotifyReportsEviction: a key the server evicts under maxmemory is
// reported as changed, like any other change.
func TestNotifyReportsEviction(t *testing.T) {
	srv := redistest.Start(t, "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
	s := redisstore.New(srv.Client(t))
	foreign := srv.Client(t)
	ctx := context.Background()
	r, _ := listen(t, s, "ev:")

	value := strings.Repeat("x", 16<<10)
	var keys []string
	for i := range 400 { // 6.4 MB into 2 MB
		k := fmt.Sprint("ev:", i)
		keys = append(keys, k)
		require.NoError(t, foreign.Set(ctx, k, value, 0).Err())
	}
	var evicted []string
	for _, k := range keys {
		r.waitKey(k, 0, "a SET")
		if n, err := foreign.Exists(ctx, k).Result(); err == nil && n == 0 {
			evicted = append(evicted, k)
		}
	}
	require.NotEmpty(t, evicted, "the server evicted nothing: the test proves nothing")
	t.Logf("%d of %d keys evicted", len(evicted), len(keys))
	for _, k := range evicted {
		r.waitKey(k, 1, "an eviction after the SET")
	}
}

// TestNotifyPrefixes: several listeners, on prefixes that overlap, each
// get exactly the changes under their own.
func TestNotifyPrefixes(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto int) {
		srv := redistest.Start(t)
		s := redisstore.New(newClient(t, srv.Addr, proto))
		foreign := srv.Client(t)
		ab, _ := listen(t, s, "a:b:")
		a, _ := listen(t, s, "a:")
		c, _ := listen(t, s, "c:")
		ab2, _ := listen(t, s, "a:b:")

		require.NoError(t, set(foreign, "a:b:1")())
		for _, r := range []*recListener{ab, a, ab2} {
			r.waitKey("a:b:1", 0, "a SET under both prefixes")
		}
		a.changes("a:x", "a SET under a: only", set(foreign, "a:x"))
		c.changes("c:1", "a SET under c:", set(foreign, "c:1"))
		require.NoError(t, set(foreign, "d:1")()) // no one's
		// Markers after everything: each listener has had all its reports
		// by then, and recListener fails on any outside its prefix.
		for _, r := range []*recListener{ab, a, c, ab2} {
			r.changes(r.prefix+"marker", "a SET", set(foreign, r.prefix+"marker"))
		}
		assert.Zero(t, ab.count('K', "a:x"))
		assert.Zero(t, a.count('K', "c:1"))
		for _, r := range []*recListener{ab, a, c, ab2} {
			assert.Zero(t, r.count('D', ""), "no Disconnected: prefixes were added to a live link")
		}
	})
}

// TestNotifyAddingAPrefixLosesNothing: a listener added to a live link (a
// new namespace) makes the link track more, and the listeners already
// there miss no change meanwhile, nor are told Disconnected.
func TestNotifyAddingAPrefixLosesNothing(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto int) {
		srv := redistest.Start(t)
		s := redisstore.New(newClient(t, srv.Addr, proto))
		foreign := srv.Client(t)
		a, _ := listen(t, s, "a:")

		stopWriting := make(chan struct{})
		var written atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stopWriting:
					return
				default:
				}
				if foreign.Set(context.Background(), fmt.Sprint("a:", i), "v", time.Minute).Err() == nil {
					written.Store(int64(i + 1))
				}
			}
		})
		for _, p := range []string{"b:", "", "c:"} { // "" covers a: and replaces it
			r, stop := listen(t, s, p)
			r.changes(p+"x", "a SET under the new prefix", set(foreign, p+"x"))
			if p == "" {
				stop() // back to tracking a: and b:
			}
		}
		close(stopWriting)
		wg.Wait()
		a.changes("a:marker", "a SET", set(foreign, "a:marker"))
		n := int(written.Load())
		require.Positive(t, n)
		for i := range n {
			if k := fmt.Sprint("a:", i); a.count('K', k) == 0 {
				t.Errorf("%s was written while prefixes were added, and not reported", k)
			}
		}
		assert.Zero(t, a.count('D', ""), "no Disconnected for a listener already connected")
		t.Logf("%d writes under a: while 3 prefixes came and one went", n)
	})
}

// TestNotifyKilledConnection: each connection of the link, killed in
// turn, makes the listener Disconnected, then Connected again, and changes
// are reported again.
func TestNotifyKilledConnection(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto int) {
		srv := redistest.Start(t)
		s := redisstore.New(newClient(t, srv.Addr, proto))
		foreign := srv.Client(t)
		r, _ := listen(t, s, "k:")
		kinds := []string{""} // RESP3: one connection
		if proto == 2 {
			kinds = []string{"-recv", "-ctl"}
		}
		conns := linkConns(t, foreign)
		require.Len(t, conns, len(kinds), "the link's connections, by name: %v", conns)
		for i, kind := range kinds {
			// The session a kill replaced closes its connections as it goes:
			// wait until only the live session's are left.
			require.Eventually(t, func() bool { return len(linkConns(t, foreign)) == len(kinds) }, 10*time.Second, time.Millisecond)
			var victim string
			for name := range linkConns(t, foreign) {
				if kind == "" || strings.HasSuffix(name, kind) {
					victim = name
				}
			}
			require.NotEmpty(t, victim, "no link connection named *%s", kind)
			d := r.count('D', "")
			start := time.Now()
			require.NoError(t, foreign.Do(context.Background(), "client", "kill", "id", linkConns(t, foreign)[victim]).Err())
			r.waitCount('D', "", d+1, "Disconnected after CLIENT KILL of "+victim)
			r.waitCount('C', "", d+2, "Connected again")
			e, _ := r.last('D')
			t.Logf("killed %s: Disconnected after %v: %v", victim, e.at.Sub(start), e.err)
			r.changes(fmt.Sprint("k:after", i), "a SET after the link came back", set(foreign, fmt.Sprint("k:after", i)))
		}
	})
}

// TestNotifyServerRestart: a restarted server (empty, every tracking
// state lost) makes the listener Disconnected, then Connected once the
// server is back, and later changes are reported.
func TestNotifyServerRestart(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto int) {
		srv := redistest.Start(t)
		s := redisstore.New(newClient(t, srv.Addr, proto))
		r, _ := listen(t, s, "r:")
		srv.Restart(t)
		r.waitCount('D', "", 1, "Disconnected after a restart")
		r.waitCount('C', "", 2, "Connected after a restart")
		foreign := srv.Client(t)
		r.changes("r:after", "a SET after the restart", set(foreign, "r:after"))
	})
}

// TestNotifyFlush: FLUSHALL and FLUSHDB change every key: the listener is
// told Disconnected (so a cache drops every copy), then Connected.
func TestNotifyFlush(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto int) {
		srv := redistest.Start(t)
		s := redisstore.New(newClient(t, srv.Addr, proto))
		foreign := srv.Client(t)
		ctx := context.Background()
		r, _ := listen(t, s, "f:")
		r.changes("f:k", "a SET", set(foreign, "f:k"))
		for i, flush := range []func() error{
			func() error { return foreign.FlushAll(ctx).Err() },
			func() error { return foreign.FlushDB(ctx).Err() },
		} {
			require.NoError(t, flush())
			r.waitCount('D', "", i+1, "Disconnected after a flush")
			r.waitCount('C', "", i+2, "Connected after a flush")
			e, _ := r.last('D')
			t.Logf("flush %d: %v", i, e.err)
			r.changes("f:k", "a SET after the flush", set(foreign, "f:k"))
		}
	})
}

// serverPID returns the process id of the server behind rdb.
func serverPID(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "server").Result()
	require.NoError(t, err)
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			require.NoError(t, err)
			return pid
		}
	}
	t.Fatal("no process_id in INFO server")
	return 0
}

// TestNotifySilentLink: a link that goes silent, with no error to see (a
// paused or frozen server, a partition), is noticed by the heartbeat:
// Disconnected within the documented 1 s (logged; the assertion is only
// waitLong), then Connected once the server answers again.
func TestNotifySilentLink(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out heartbeats; -short skips it")
	}
	forEachProtocol(t, func(t *testing.T, proto int) {
		cases := []struct {
			name   string
			silent func(t *testing.T, srv *redistest.Server, p *redistest.Proxy) (resume func())
		}{
			{"ClientPause", func(t *testing.T, srv *redistest.Server, _ *redistest.Proxy) func() {
				c := srv.Client(t)
				require.NoError(t, c.Do(context.Background(), "client", "pause", 3000, "all").Err())
				return func() { _ = c.Do(context.Background(), "client", "unpause").Err() }
			}},
			{"SIGSTOP", func(t *testing.T, srv *redistest.Server, _ *redistest.Proxy) func() {
				proc, err := os.FindProcess(serverPID(t, srv.Client(t)))
				require.NoError(t, err)
				require.NoError(t, proc.Signal(syscall.SIGSTOP))
				var once sync.Once
				resume := func() { once.Do(func() { _ = proc.Signal(syscall.SIGCONT) }) }
				t.Cleanup(resume)
				return resume
			}},
			{"Blackhole", func(t *testing.T, _ *redistest.Server, p *redistest.Proxy) func() {
				p.Blackhole(true)
				return func() { p.Blackhole(false) }
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				srv := redistest.Start(t)
				p := redistest.StartProxy(t, srv.Addr)
				s := redisstore.New(newClient(t, p.Addr, proto))
				r, _ := listen(t, s, "s:")
				start := time.Now()
				resume := tc.silent(t, srv, p)
				r.waitCount('D', "", 1, "Disconnected on a silent link")
				e, _ := r.last('D')
				t.Logf("silent link noticed after %v (documented bound 1s): %v", e.at.Sub(start), e.err)
				resume()
				r.waitCount('C', "", 2, "Connected once the server answers")
				r.changes("s:after", "a SET after recovery", set(srv.Client(t), "s:after"))
			})
		}
	})
}

// TestNotifyLastStopTearsDown: when the last listener stops, the link's
// connections are closed and its goroutines end; a later Notify starts a
// new link.
func TestNotifyLastStopTearsDown(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto int) {
		srv := redistest.Start(t)
		foreign := srv.Client(t)
		ignore := goleak.IgnoreCurrent()
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: proto})
		s := redisstore.New(rdb)
		for round := range 2 {
			_, stop1 := listen(t, s, "x:")
			_, stop2 := listen(t, s, "y:")
			require.NotEmpty(t, linkConns(t, foreign))
			stop1()
			require.NotEmpty(t, linkConns(t, foreign), "round %d: a listener is left", round)
			stop2()
			deadline := time.Now().Add(waitLong)
			for len(linkConns(t, foreign)) > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			require.Empty(t, linkConns(t, foreign), "round %d: connections left after the last stop", round)
		}
		require.NoError(t, rdb.Close())
		goleak.VerifyNone(t, ignore)
	})
}

// blockingListener blocks in its first Changed until released, and
// records whether stop returned while that call was running.
type blockingListener struct {
	entered     chan struct{} // a token when the first Changed starts
	release     chan struct{}
	first       atomic.Bool
	stopped     atomic.Bool
	early       atomic.Bool // stop returned during the call
	calls       atomic.Int32
	callsAtStop atomic.Int32
}

func (b *blockingListener) Connected(bool)     { b.calls.Add(1) }
func (b *blockingListener) Disconnected(error) { b.calls.Add(1) }
func (b *blockingListener) Changed(string) {
	b.calls.Add(1)
	if b.first.CompareAndSwap(false, true) {
		b.entered <- struct{}{}
		<-b.release
		if b.stopped.Load() {
			b.early.Store(true)
		}
	}
}

// TestNotifyStopWaitsForCalls: stop returns only after a call in progress
// has, and no call follows it.
func TestNotifyStopWaitsForCalls(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto int) {
		srv := redistest.Start(t)
		s := redisstore.New(newClient(t, srv.Addr, proto))
		foreign := srv.Client(t)
		keep, _ := listen(t, s, "") // keeps the link up after stop
		b := &blockingListener{entered: make(chan struct{}, 1), release: make(chan struct{})}
		stop, err := s.Notify("w:", b)
		require.NoError(t, err)
		// Connected comes in the background: write until b is told. (Not
		// through keep: once b blocks in Changed, the link's delivery,
		// which b shares with keep, waits for it.)
		for i := 0; len(b.entered) == 0; i++ {
			require.NoError(t, set(foreign, fmt.Sprint("w:", i))())
			time.Sleep(5 * time.Millisecond)
		}
		<-b.entered // b is inside its first Changed
		stopped := make(chan struct{})
		go func() {
			stop()
			b.stopped.Store(true)
			b.callsAtStop.Store(b.calls.Load())
			close(stopped)
		}()
		time.Sleep(50 * time.Millisecond) // a chance for a wrong stop to return
		close(b.release)
		<-stopped
		assert.False(t, b.early.Load(), "stop returned while Changed was running")
		keep.changes("w:after", "a SET after stop", set(foreign, "w:after"))
		assert.Equal(t, b.callsAtStop.Load(), b.calls.Load(), "a call after stop returned")
	})
}

// TestNotifyUnsupported: a client of a type Notify does not know is an
// error matching errors.ErrUnsupported, as is a RESP3 client whose
// invalidate pushes already go to another handler.
func TestNotifyUnsupported(t *testing.T) {
	srv := redistest.Start(t)
	wrapped := struct{ redis.UniversalClient }{srv.Client(t)}
	_, err := redisstore.New(wrapped).Notify("", newRecListener(t, ""))
	assert.ErrorIs(t, err, errors.ErrUnsupported)

	rdb := srv.Client(t)
	require.NoError(t, rdb.RegisterPushNotificationHandler("invalidate", otherHandler{}, false))
	_, err = redisstore.New(rdb).Notify("", newRecListener(t, ""))
	assert.ErrorIs(t, err, errors.ErrUnsupported)

	_, err = redisstore.New(srv.Client(t)).Notify("", nil)
	assert.Error(t, err)
}

type otherHandler struct{}

func (otherHandler) HandlePushNotification(context.Context, push.NotificationHandlerContext, []any) error {
	return nil
}

// TestNotifyTwoStoresOneClient: two Stores over one client (two caches
// built from one client) each get their changes; the push handler they
// share on a RESP3 client serves both.
func TestNotifyTwoStoresOneClient(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	foreign := srv.Client(t)
	r1, _ := listen(t, redisstore.New(rdb), "one:")
	r2, _ := listen(t, redisstore.New(rdb), "two:")
	r1.changes("one:k", "a SET", set(foreign, "one:k"))
	r2.changes("two:k", "a SET", set(foreign, "two:k"))
}

// TestNotifyCluster: on a Cluster every master is tracked, each by its own
// link, and writes on every master are reported; a master killed makes
// listeners Disconnected until its replacement is tracked.
func TestNotifyCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster; -short skips it")
	}
	addrs := redistest.StartCluster(t, 3)
	forEachProtocol(t, func(t *testing.T, proto int) {
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Protocol: proto})
		t.Cleanup(func() { _ = rdb.Close() })
		foreign := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		t.Cleanup(func() { _ = foreign.Close() })
		s := redisstore.New(rdb)
		r, _ := listen(t, s, "c:")
		ctx := context.Background()

		var mu sync.Mutex
		perNode := map[string]int{}
		require.NoError(t, foreign.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			conns := 0
			list, err := n.ClientList(ctx).Result()
			for line := range strings.Lines(list) {
				if strings.Contains(line, "name="+linkPrefix) {
					conns++
				}
			}
			mu.Lock()
			perNode[n.Options().Addr] = conns
			mu.Unlock()
			return err
		}))
		t.Logf("link connections per master: %v", perNode)
		for addr, n := range perNode {
			assert.Positive(t, n, "master %s is not tracked", addr)
		}

		slotsSeen := map[string]bool{}
		for i := range 60 { // spread over every master
			k := fmt.Sprint("c:", i)
			r.changes(k, "a SET on a master", set(foreign, k))
			addr, err := masterOf(ctx, foreign, k)
			require.NoError(t, err)
			slotsSeen[addr] = true
		}
		assert.Len(t, slotsSeen, 3, "the writes reached every master")
		assert.Zero(t, r.count('D', ""))
	})
}

// TestNotifyClusterNewMaster: a master that joins the cluster and takes
// slots is noticed: listeners are told Disconnected (its changes until
// then went unreported), then Connected once it is tracked too, and
// writes on it are reported.
func TestNotifyClusterNewMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and reshards it; -short skips it")
	}
	addrs := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = rdb.Close() })
	r, _ := listen(t, redisstore.New(rdb), "c:")
	ctx := context.Background()

	extra := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
	redisCLI(t, "--cluster", "add-node", extra.Addr, addrs[0])
	id, err := extra.Client(t).ClusterMyID(ctx).Result()
	require.NoError(t, err)
	// Gossip needs a moment before every node agrees on the newcomer.
	require.Eventually(t, func() bool {
		for _, a := range addrs {
			nodes, err := newClient(t, a, 3).ClusterNodes(ctx).Result()
			if err != nil || !strings.Contains(nodes, id+" "+extra.Addr) || !strings.Contains(nodes, "connected") {
				return false
			}
		}
		return exec.Command("redis-cli", "--cluster", "check", addrs[0]).Run() == nil
	}, waitLong, 100*time.Millisecond, "the cluster agrees on the new node")
	start := time.Now()
	redisCLI(t, "--cluster", "reshard", addrs[0], "--cluster-from", "all", "--cluster-to", id,
		"--cluster-slots", "300", "--cluster-yes")
	require.Eventually(t, func() bool {
		for _, a := range append([]string{extra.Addr}, addrs...) {
			info, err := newClient(t, a, 3).ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	}, waitLong, 50*time.Millisecond, "the cluster is ok after the reshard")
	r.waitCount('D', "", 1, "Disconnected: a new master")
	r.waitCount('C', "", 2, "Connected with the new master tracked")
	e, _ := r.last('D')
	t.Logf("new master noticed %v after the reshard began: %v", e.at.Sub(start), e.err)

	foreign := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = foreign.Close() })
	onNew := 0
	for i := 0; onNew < 3 && i < 2000; i++ {
		k := fmt.Sprint("c:", i)
		addr, err := masterOf(ctx, foreign, k)
		require.NoError(t, err)
		if addr != extra.Addr {
			continue
		}
		onNew++
		r.changes(k, "a SET on the new master", set(foreign, k))
	}
	require.Equal(t, 3, onNew, "no key hashed to the new master's slots")
}

func redisCLI(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	require.NoError(t, err, "redis-cli %v:\n%s", args, out)
}

// masterOf returns the address of the master holding key.
func masterOf(ctx context.Context, c *redis.ClusterClient, key string) (string, error) {
	slot, err := c.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return "", err
	}
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return "", err
	}
	for _, s := range slots {
		if int64(s.Start) <= slot && slot <= int64(s.End) {
			return s.Nodes[0].Addr, nil
		}
	}
	return "", fmt.Errorf("slot %d not served", slot)
}

// TestNotifyRing: on a Ring every shard is tracked.
func TestNotifyRing(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	forEachProtocol(t, func(t *testing.T, proto int) {
		ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": a.Addr, "b": b.Addr}, Protocol: proto})
		t.Cleanup(func() { _ = ring.Close() })
		s := redisstore.New(ring)
		r, _ := listen(t, s, "ring:")
		ctx := context.Background()
		on := map[string]int{}
		for i := range 40 {
			k := fmt.Sprint("ring:", i)
			r.changes(k, "a SET through the ring", func() error { return ring.Set(ctx, k, "v", time.Minute).Err() })
		}
		for name, srv := range map[string]*redistest.Server{"a": a, "b": b} {
			n, err := srv.Client(t).Exists(ctx, keysOf("ring:", 40)...).Result()
			require.NoError(t, err)
			on[name] = int(n)
		}
		t.Logf("keys per shard: %v", on)
		assert.Positive(t, on["a"])
		assert.Positive(t, on["b"])
	})
}

func keysOf(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint(prefix, i)
	}
	return keys
}

// TestNotifySentinelFailover: with a Sentinel failover client, a failover
// makes the listener Disconnected, then Connected once the link has
// followed the client to the new master, where writes are reported.
func TestNotifySentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Sentinel failover; -short skips it")
	}
	forEachProtocol(t, func(t *testing.T, proto int) {
		sen := redistest.StartSentinel(t)
		rdb := redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:    sen.MasterName,
			SentinelAddrs: []string{sen.Addr},
			Protocol:      proto,
		})
		t.Cleanup(func() { _ = rdb.Close() })
		s := redisstore.New(rdb)
		r, _ := listen(t, s, "sen:")
		ctx := context.Background()
		r.changes("sen:before", "a SET before the failover", func() error {
			return rdb.Set(ctx, "sen:before", "v", time.Minute).Err()
		})
		oldMaster := sen.Master(t)
		start := time.Now()
		sen.Failover(t)
		r.waitCount('D', "", 1, "Disconnected on failover")
		r.waitCount('C', "", 2, "Connected to the new master")
		e, _ := r.last('D')
		t.Logf("failover: Disconnected after %v: %v", e.at.Sub(start), e.err)
		newMaster := sen.Master(t)
		require.NotEqual(t, oldMaster, newMaster)
		direct := newClient(t, newMaster, 3)
		r.changes("sen:after", "a SET on the new master", set(direct, "sen:after"))
	})
}

// TestNotifyLatency measures the time from a foreign write's reply to
// Changed, over hundreds of writes, for each protocol. Logged, not
// asserted: see BenchmarkNotifyLatency.
func TestNotifyLatency(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto int) {
		srv := redistest.Start(t)
		s := redisstore.New(newClient(t, srv.Addr, proto))
		foreign := srv.Client(t)
		got := make(chan string, 16)
		r := newRecListener(t, "lat:")
		r.onChanged = func(key string) { got <- key }
		listenWith(t, s, r)
		ctx := context.Background()
		const n = 500
		lat := make([]time.Duration, 0, n)
		for i := range n {
			k := fmt.Sprint("lat:", i)
			start := time.Now()
			require.NoError(t, foreign.Set(ctx, k, "v", time.Minute).Err())
			waitChangedKey(t, got, k)
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		t.Logf("SET to Changed over %d writes: p50 %v, p99 %v, max %v", n, lat[n/2], lat[n*99/100], lat[n-1])
	})
}

func waitChangedKey(t testing.TB, got <-chan string, key string) {
	timeout := time.NewTimer(waitLong)
	defer timeout.Stop()
	for {
		select {
		case k := <-got:
			if k == key {
				return
			}
		case <-timeout.C:
			t.Fatalf("Changed(%q) not within %v", key, waitLong)
		}
	}
}

// BenchmarkNotifyLatency: one foreign SET, then the wait for its Changed;
// ns/op is the round trip plus the notification.
func BenchmarkNotifyLatency(b *testing.B) {
	srv := redistest.Start(b)
	for _, proto := range []int{3, 2} {
		b.Run(fmt.Sprintf("RESP%d", proto), func(b *testing.B) {
			s := redisstore.New(newClient(b, srv.Addr, proto))
			foreign := srv.Client(b)
			got := make(chan string, 16)
			connected := make(chan struct{}, 1)
			stop, err := s.Notify("bench:", listenerFuncs{
				connected: func() {
					select {
					case connected <- struct{}{}:
					default:
					}
				},
				changed: func(k string) { got <- k },
			})
			require.NoError(b, err)
			defer stop()
			<-connected
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := "bench:" + strconv.Itoa(i)
				i++
				if err := foreign.Set(ctx, k, "v", time.Minute).Err(); err != nil {
					b.Fatal(err)
				}
				waitChangedKey(b, got, k)
			}
		})
	}
}

type listenerFuncs struct {
	connected func()
	changed   func(string)
}

func (l listenerFuncs) Connected(bool)     { l.connected() }
func (l listenerFuncs) Changed(k string)   { l.changed(k) }
func (l listenerFuncs) Disconnected(error) {}
