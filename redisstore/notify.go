package redisstore

// This file implements store.Notifier with Redis server-assisted
// client-side caching: CLIENT TRACKING in broadcasting mode (BCAST), which
// makes the server report every change to a key under the tracked
// prefixes, whoever made it, without the client having read the key first.
//
// The moving parts, from the outside in:
//
//   - hub: one per Store, started by the first Notify and ended by the
//     last stop. It holds the listeners, works out the prefixes to track,
//     and runs one goroutine (manage) that owns every decision: which
//     nodes to track, which sessions to start or replace, and what to tell
//     each listener.
//   - node: one server to track, a master. A single-node or Sentinel
//     client has one; a Cluster one per master, a Ring one per live shard,
//     both listed again every topologyInterval.
//   - session: one attempt at tracking one node with one prefix set, on
//     connections of its own. It reports up once tracking is confirmed and
//     fails, for good, at the first sign that a change may have gone
//     unreported; the hub then tells listeners Disconnected and starts a
//     new session. A session is never repaired in place: every go-redis
//     reconnect, kill, restart or flush ends it.
//
// A session's tracking connection is a Conn from the client's
// EphemeralConn, which closes the connection at the end rather than
// returning it to the pool with tracking on. It always has a command in
// flight: WAIT for more replicas than exist, which blocks on the server
// for heartbeatInterval and then answers (its EOF shows a killed
// connection at once, its error a demoted master), then CLIENT
// TRACKINGINFO, which checks that tracking is still as set (a socket
// go-redis replaced under the Conn would not be tracking). Where the
// invalidations arrive depends on the client's protocol:
//
//   - RESP3 (go-redis's default): on the tracking connection itself, as
//     "invalidate" pushes: no REDIRECT to break, no second connection,
//     and no CLIENT LIST (an admin command) to find one. go-redis reads a
//     push only while a command waits for its reply (hence the WAIT) and
//     hands it to a handler registered on the push processor, which a
//     Conn shares with its client; pushHandler is stateless and finds the
//     session in the context of the command during which the push was
//     read. (A PubSub receiver would not help: it reads pushes the same
//     way, through the same processor.)
//   - RESP2: RESP2 has no pushes, so invalidations go, by REDIRECT, to a
//     second connection subscribed to __redis__:invalidate (a PubSub),
//     whose client id is found by its name in CLIENT LIST. It is pinged
//     every heartbeatInterval and must hear something within
//     heartbeatInterval+heartbeatTimeout; TRACKINGINFO also checks that
//     the redirect still points to it.
//
// A new prefix set means a new session; the old one is retired once the
// new one is up, and drains first (see drain), so a change made while the
// set changes is reported by one or the other, never lost.
//
// Every command the link sends is bounded by a timer of ours: go-redis
// ignores context deadlines on its sockets unless the client enables them.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough/store"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/push"
)

var _ store.Notifier = (*Store)(nil)

const (
	// heartbeatInterval is how often a live link proves itself: a WAIT
	// that blocks this long (RESP3), or a PING to the receiver (RESP2),
	// each followed by a check of the tracking connection.
	heartbeatInterval = 500 * time.Millisecond
	// heartbeatTimeout bounds each heartbeat's wait for its reply beyond
	// what the server was asked to take. A link that goes silent is
	// declared lost at most heartbeatInterval+heartbeatTimeout after its
	// last sign of life.
	heartbeatTimeout = 500 * time.Millisecond
	// setupTimeout bounds the setup of a session: dial, TLS, AUTH, HELLO
	// and the tracking commands.
	setupTimeout = 5 * time.Second
	// topologyInterval is how often a Cluster's masters or a Ring's live
	// shards are listed again, to track new ones.
	topologyInterval = time.Second
	// maxRetryDelay caps the delay before a failed session is tried
	// again; the first retry is immediate.
	maxRetryDelay = time.Second

	// waitReplicas is more replicas than any server has, so WAIT always
	// runs to its timeout.
	waitReplicas = 1 << 20

	invalidateChannel = "__redis__:invalidate"
	invalidatePush    = "invalidate"
	// connNamePrefix starts the CLIENT SETNAME of every connection the
	// link opens, so operators (and tests) can find them in CLIENT LIST.
	connNamePrefix = "readthrough-notify-"
)

var (
	errFlushed   = errors.New("redisstore: the server was flushed (FLUSHALL or FLUSHDB): every key changed")
	errReconnect = errors.New("redisstore: the receiving connection was re-established by go-redis: invalidations may have been lost")
	errClosed    = errors.New("redisstore: notify session closed")
	errDrained   = errors.New("redisstore: notify session replaced")
)

// Notify implements [store.Notifier] with Redis server-assisted
// client-side caching in broadcasting mode: CLIENT TRACKING ON BCAST with
// one PREFIX per distinct prefix (overlapping ones reduced to the
// shortest, "" to every key). The server then reports every change to a
// key under a prefix, whoever made it: this store, another process, a
// redis-cli SET or DEL, an expiry, an eviction. It needs Redis 6 or later
// (or Valkey), and nothing to configure: the first Notify starts the link
// in the background, on connections of the Store's own client (so its
// dialer, TLS, credentials and DB apply), and the last stop closes it.
//
// What a listener is told: Connected(true) once the server has confirmed
// tracking of its prefix on every node; then Changed(key) for each change,
// typically within a millisecond of the write; and Disconnected(err) as
// soon as a change may have gone unreported, then Connected again once
// tracking is re-established. How soon a lost link is noticed:
//
//   - A connection closed or reset (CLIENT KILL, a server restart or
//     crash): at once, plus go-redis's retry backoff (MaxRetries with
//     MinRetryBackoff..MaxRetryBackoff; under 0.2 s with the defaults).
//   - A FLUSHALL or FLUSHDB: at once, as Disconnected then Connected,
//     since every key changed.
//   - A link gone silent, with no error to see (a partition, a paused or
//     frozen server): 1 s after the last reply the link had, plus
//     scheduling delays (measured: 1.00 to 1.02 s on loopback). A
//     heartbeat runs every 500 ms and its reply is awaited at most 500 ms
//     longer than the server was asked to take.
//   - A Sentinel failover: when go-redis hears of it from the Sentinel,
//     or when the Sentinel demotes the old master and kills its clients,
//     whichever comes first; and on a master found demoted, at the next
//     heartbeat. Writes that reach the new master before then go
//     unreported, in the window where Sentinel itself may lose writes.
//   - A Cluster master or Ring shard that appears, or a failed-over
//     master: the masters (shards) are listed every second, so within
//     about 1 s of the client's view of the topology.
//
// Each node tracked costs one connection taken from the client's pool
// for as long as the link lives (RESP3, go-redis's default), or two: that
// one and a PubSub connection (RESP2, Protocol: 2). They are named
// readthrough-notify-… in CLIENT LIST, and the pooled one shows as
// blocked (in WAIT) between heartbeats. The server user needs CLIENT
// TRACKING, CLIENT SETNAME, CLIENT TRACKINGINFO, WAIT and PING, plus HELLO
// (RESP3), or SUBSCRIBE and CLIENT LIST (RESP2).
//
// On RESP3, go-redis hands pushes only to handlers registered on a push
// processor, which a connection shares with its client (a Sentinel
// failover client's Conn has one of its own). So Notify registers a
// handler for "invalidate" pushes there: stateless, it ignores pushes read
// by any connection but the link's, and it stays registered. A client that
// already hands them to another handler (go-redis's own client-side
// cache) cannot be tracked: Notify returns an error matching
// [errors.ErrUnsupported] for a single client, and a Cluster or Ring node
// with one is never Connected.
//
// Clients: *redis.Client, single node or Sentinel failover (after a
// failover the link reconnects through the client to the new master),
// *redis.ClusterClient (every master; Connected only while all are
// tracked) and *redis.Ring (every live shard). Any other
// [redis.UniversalClient] gets an error matching [errors.ErrUnsupported].
//
// Listener methods are called from the link's goroutines, concurrently
// for a Cluster or Ring. stop waits for calls in progress and must not be
// called from within one.
func (s *Store) Notify(prefix string, l store.Listener) (stop func(), err error) {
	if l == nil {
		return nil, errors.New("redisstore: Notify: nil Listener")
	}
	static, list, err := nodesOf(s.client)
	if err != nil {
		return nil, err
	}
	if static != nil {
		// A single client: a handler conflict is known now and final.
		if err := pushConflict(static); err != nil {
			return nil, err
		}
	}
	s.link.mu.Lock()
	h := s.link.hub
	if h == nil {
		h = startHub(static, list)
		s.link.hub = h
	}
	sb := h.add(prefix, l)
	s.link.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { s.unnotify(h, sb) }) }, nil
}

// unnotify is stop: it unregisters sb, waits for its calls in progress,
// and ends the hub with its last listener.
func (s *Store) unnotify(h *hub, sb *sub) {
	s.link.mu.Lock()
	last := h.remove(sb)
	if last && s.link.hub == h {
		s.link.hub = nil // the next Notify starts a new hub
	}
	s.link.mu.Unlock()
	sb.stop()
	if last {
		h.close()
	}
}

// notifyLink is the Store's part in Notify: the hub serving its listeners,
// from the first Notify to the last stop. The zero value has none.
type notifyLink struct {
	mu  sync.Mutex
	hub *hub
}

// lister lists the nodes to track: a Cluster's masters, a Ring's live
// shards.
type lister func(context.Context) ([]*redis.Client, error)

// nodesOf returns the one node of a single client, or how to list the
// nodes of a sharded one.
func nodesOf(c redis.UniversalClient) (*redis.Client, lister, error) {
	switch c := c.(type) {
	case *redis.Client:
		return c, nil, nil
	case *redis.ClusterClient:
		return nil, func(ctx context.Context) ([]*redis.Client, error) {
			return collect(ctx, c.ForEachMaster)
		}, nil
	case *redis.Ring:
		return nil, func(ctx context.Context) ([]*redis.Client, error) {
			return collect(ctx, c.ForEachShard)
		}, nil
	}
	return nil, nil, fmt.Errorf("redisstore: Notify: a %T cannot be tracked (want *redis.Client, *redis.ClusterClient or *redis.Ring): %w", c, errors.ErrUnsupported)
}

// collect gathers the clients a ForEachMaster or ForEachShard visits.
func collect(ctx context.Context, forEach func(context.Context, func(context.Context, *redis.Client) error) error) ([]*redis.Client, error) {
	var mu sync.Mutex
	var out []*redis.Client
	err := forEach(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		out = append(out, c)
		mu.Unlock()
		return nil
	})
	return out, err
}

// sub is one listener: what Notify registered, and the gate that lets stop
// wait for its calls in progress.
type sub struct {
	prefix string
	l      store.Listener

	mu      sync.RWMutex // held for reading by each call, for writing by stop
	stopped bool
}

func (s *sub) changed(key string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.stopped {
		s.l.Changed(key)
	}
}

func (s *sub) connected() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.stopped {
		s.l.Connected(true)
	}
}

func (s *sub) disconnected(err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.stopped {
		s.l.Disconnected(err)
	}
}

// stop waits for calls in progress; none starts after it returns.
func (s *sub) stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
}

// hub serves the listeners of one Store.
type hub struct {
	static *redis.Client // the one node of a single client, or nil
	list   lister        // or how to list the nodes

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when manage returns
	wake   chan struct{} // a token: something changed, reconcile

	mu   sync.Mutex
	subs []*sub                 // copied on write, guarded by mu
	snap atomic.Pointer[[]*sub] // subs, for the delivery of changes

	// Owned by manage.
	nodes    map[*redis.Client]*node
	listed   bool // the nodes are known
	listing  bool // a lister is running
	nextList time.Time
	listRes  chan listResult
	told     map[*sub]bool // told Connected, not since Disconnected
	sessions sync.WaitGroup
}

type listResult struct {
	nodes []*redis.Client
	err   error
}

// node is one server to track, and its sessions.
type node struct {
	client   *redis.Client
	addr     string
	active   *session   // up, and relied on for the listeners it covers
	pending  *session   // being set up, to replace or stand in for active
	retiring []*session // replaced by active, delivering what they still hold
	why      error      // why active is nil: what Disconnected says
	blip     error      // a retiring session failed: Disconnected, then Connected
	failures int        // consecutive, for the retry delay
	retryAt  time.Time
}

func startHub(static *redis.Client, list lister) *hub {
	h := &hub{
		static:  static,
		list:    list,
		done:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		nodes:   make(map[*redis.Client]*node),
		listRes: make(chan listResult),
		told:    make(map[*sub]bool),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.snap.Store(new([]*sub))
	if static != nil {
		h.addNode(static)
		h.listed = true
	}
	go h.manage()
	return h
}

// add registers a listener and wakes the manager to track its prefix.
func (h *hub) add(prefix string, l store.Listener) *sub {
	sb := &sub{prefix: prefix, l: l}
	h.mu.Lock()
	h.subs = append(slices.Clip(h.subs), sb)
	subs := h.subs
	h.snap.Store(&subs)
	h.mu.Unlock()
	h.poke()
	return sb
}

// remove unregisters a listener and reports whether it was the last.
func (h *hub) remove(sb *sub) (last bool) {
	h.mu.Lock()
	subs := slices.DeleteFunc(slices.Clone(h.subs), func(s *sub) bool { return s == sb })
	h.subs = subs
	h.snap.Store(&subs)
	h.mu.Unlock()
	h.poke()
	return len(subs) == 0
}

// close ends the hub: every session is closed and the manager has
// returned. Goroutines still inside a go-redis call end with that call,
// within the client's own timeouts, and call no listener.
func (h *hub) close() {
	h.cancel()
	<-h.done
}

func (h *hub) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// changed tells each listener whose prefix key is under.
func (h *hub) changed(key string) {
	for _, sb := range *h.snap.Load() {
		if strings.HasPrefix(key, sb.prefix) {
			sb.changed(key)
		}
	}
}

func (h *hub) manage() {
	defer close(h.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := h.reconcile(time.Now())
		timer.Reset(time.Until(next))
		select {
		case <-h.ctx.Done():
			for _, n := range h.nodes {
				n.closeSessions()
			}
			h.sessions.Wait()
			return
		case <-h.wake:
		case r := <-h.listRes:
			h.applyList(r, time.Now())
		case <-timer.C:
		}
	}
}

// reconcile brings sessions and listeners in line with what is wanted and
// known now, and returns when it next needs to run (sooner if poked).
//
// It works in phases so no window goes unreported: sessions that failed
// are dropped and their listeners told Disconnected before any session
// that came up is relied on, even if the new one covers the same
// listeners; the change that killed the old one may predate the new one.
// A session replaced by one that tracks all it did retires: it goes on
// delivering until it has drained what the server sent it before its
// successor was up. If it fails first, some of that may be lost, so its
// listeners are told Disconnected then Connected (a blip).
func (h *hub) reconcile(now time.Time) time.Time {
	h.mu.Lock()
	subs := h.subs
	h.mu.Unlock()
	for sb := range h.told {
		if !slices.Contains(subs, sb) {
			delete(h.told, sb)
		}
	}
	want := trackedPrefixes(subs)

	if h.list != nil && !h.listing && !now.Before(h.nextList) {
		h.listing = true
		go h.listNodes()
	}

	// 1. Failures.
	for _, n := range h.nodes {
		if s := n.active; s != nil {
			if _, err := s.status(); err != nil {
				n.active, n.why = nil, err
				n.scheduleRetry(s, now)
			}
		}
		if s := n.pending; s != nil {
			if _, err := s.status(); err != nil {
				n.pending = nil
				if n.active == nil {
					n.why = err
				}
				n.scheduleRetry(s, now)
			}
		}
		n.retiring = slices.DeleteFunc(n.retiring, func(s *session) bool {
			_, err := s.status()
			if err != nil && !errors.Is(err, errDrained) && n.blip == nil {
				n.blip = err
			}
			return err != nil
		})
	}
	h.tell(subs)
	for _, n := range h.nodes {
		n.blip = nil
	}

	// 2. Sessions up with the prefixes wanted now.
	for _, n := range h.nodes {
		if s := n.pending; s != nil {
			if up, _ := s.status(); up && slices.Equal(s.prefixes, want) {
				if n.active != nil {
					n.active.startRetiring()
					n.retiring = append(n.retiring, n.active)
				}
				n.active, n.pending, n.why = s, nil, nil
			}
		}
	}
	h.tell(subs)

	// 3. Sessions to start.
	next := now.Add(time.Hour)
	if h.list != nil && !h.listing {
		next = h.nextList
	}
	for _, n := range h.nodes {
		need := len(want) > 0 && (n.active == nil || !slices.Equal(n.active.prefixes, want))
		if n.pending != nil && (!need || !slices.Equal(n.pending.prefixes, want)) {
			n.pending.close()
			n.pending = nil
		}
		if need && n.pending == nil {
			if now.Before(n.retryAt) {
				next = minTime(next, n.retryAt)
			} else {
				n.pending = h.startSession(n, want)
			}
		}
	}
	return next
}

// tell calls Connected or Disconnected for each listener whose state
// changed.
func (h *hub) tell(subs []*sub) {
	for _, sb := range subs {
		why := h.uncovered(sb.prefix)
		switch was := h.told[sb]; {
		case why == nil && !was:
			h.told[sb] = true
			sb.connected()
		case why != nil && was:
			h.told[sb] = false
			sb.disconnected(why)
		}
	}
}

// uncovered returns why changes under prefix are not all reported now, or
// nil if they are: every node has a session up that tracks them.
func (h *hub) uncovered(prefix string) error {
	if !h.listed || len(h.nodes) == 0 {
		return errors.New("redisstore: no node to track is known yet")
	}
	for _, n := range h.nodes {
		if n.blip != nil {
			return n.blip
		}
		if n.active == nil || !covers(n.active.prefixes, prefix) {
			if n.why != nil {
				return n.why
			}
			return fmt.Errorf("redisstore: changes under %q on %s are not tracked yet", prefix, n.addr)
		}
	}
	return nil
}

func (h *hub) listNodes() {
	nodes, err := h.list(h.ctx)
	select {
	case h.listRes <- listResult{nodes, err}:
	case <-h.ctx.Done():
	}
}

// applyList starts tracking nodes that appeared and stops tracking those
// that left. A node that appeared makes its listeners Disconnected until
// it is tracked: its changes so far were not.
func (h *hub) applyList(r listResult, now time.Time) {
	h.listing = false
	h.nextList = now.Add(topologyInterval)
	if r.err != nil && len(r.nodes) == 0 {
		return // keep what we know; a dead node's session fails by itself
	}
	seen := make(map[*redis.Client]bool, len(r.nodes))
	for _, c := range r.nodes {
		seen[c] = true
		if _, ok := h.nodes[c]; !ok {
			n := h.addNode(c)
			if h.listed {
				n.why = fmt.Errorf("redisstore: %s joined the nodes to track: its changes so far went unreported", n.addr)
			}
		}
	}
	for c, n := range h.nodes {
		if !seen[c] {
			n.closeSessions()
			delete(h.nodes, c)
		}
	}
	h.listed = true
}

func (h *hub) addNode(c *redis.Client) *node {
	n := &node{client: c, addr: c.Options().Addr}
	h.nodes[c] = n
	return n
}

func (n *node) closeSessions() {
	if n.active != nil {
		n.active.close()
		n.active = nil
	}
	if n.pending != nil {
		n.pending.close()
		n.pending = nil
	}
	for _, s := range n.retiring {
		s.close()
	}
	n.retiring = nil
}

// scheduleRetry sets when to try again after s failed: at once the first
// time (a kill, a flush, a restart usually heal at once), then backing off
// to maxRetryDelay, with jitter so a fleet does not reconnect in step.
func (n *node) scheduleRetry(s *session, now time.Time) {
	if up, since := s.upSince(); up && now.Sub(since) > maxRetryDelay {
		n.failures = 0 // it had been working
	}
	var d time.Duration
	if n.failures > 0 {
		d = min(maxRetryDelay, 25*time.Millisecond<<min(n.failures-1, 10))
		d = d/2 + rand.N(d/2+1)
	}
	n.failures++
	n.retryAt = now.Add(d)
}

func (h *hub) startSession(n *node, prefixes []string) *session {
	s := &session{h: h, client: n.client, addr: n.addr, prefixes: prefixes, retire: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(h.ctx)
	h.sessions.Add(1)
	go s.run()
	return s
}

// session tracks one node with one prefix set, until it fails, is closed,
// or retires once a successor tracks what it did. It is never revived:
// the hub starts another.
type session struct {
	h        *hub
	client   *redis.Client
	addr     string
	prefixes []string

	ctx    context.Context // done once the session ended
	cancel context.CancelFunc

	retire     chan struct{} // closed by the hub: drain, then end
	retireOnce sync.Once

	mu   sync.Mutex
	up   bool
	upAt time.Time
	err  error // why it ended; nil while it lives
}

func (s *session) status() (up bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up, s.err
}

func (s *session) upSince() (bool, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up, s.upAt
}

// markUp reports that tracking is confirmed: from now on every change
// under s.prefixes reaches the hub.
func (s *session) markUp() {
	s.mu.Lock()
	if s.err == nil && !s.up {
		s.up, s.upAt = true, time.Now()
	}
	s.mu.Unlock()
	s.h.poke()
}

// fail ends the session for the first reason given.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = fmt.Errorf("redisstore: notify link to %s: %w", s.addr, err)
	}
	s.mu.Unlock()
	s.cancel()
	s.h.poke()
}

// close ends a session the hub does not rely on: what it has not yet
// delivered is lost.
func (s *session) close() { s.fail(errClosed) }

// startRetiring asks a session that a successor has replaced to deliver
// what it still holds and end, with errDrained once it has. Closing it
// instead would drop the invalidations for changes made before the
// successor tracked them that are still on their way.
func (s *session) startRetiring() {
	s.retireOnce.Do(func() { close(s.retire) })
}

func (s *session) retiring() bool {
	select {
	case <-s.retire:
		return true
	default:
		return false
	}
}

func (s *session) run() {
	defer s.h.sessions.Done()
	err := s.track()
	if err == nil {
		err = s.ctx.Err()
	}
	s.fail(err)
}

// sessionKey carries the session in the context of the RESP3 commands
// during which its pushes are read.
type sessionKey struct{}

// track sets tracking up, then keeps checking it until the session ends.
func (s *session) track() error {
	resp3 := s.client.Options().Protocol != 2
	name := newConnName("")
	ctx := s.ctx
	var rcv *receiver
	// One command through the client first. go-redis v9.23 races (a data
	// race, benign but reported by -race) when a Conn and its client set
	// up their first connections at once: both may rewrite the shared
	// options' maintenance-notifications mode, under different locks.
	// Once the client has set up one connection, neither writes.
	if err := bounded(s.ctx, setupTimeout, func() error { return s.client.Ping(s.ctx).Err() }); err != nil {
		return fmt.Errorf("PING: %w", err)
	}
	conn := s.client.EphemeralConn()
	if resp3 {
		if err := registerPushHandler(s.client, conn); err != nil {
			_ = conn.Close()
			return err
		}
		ctx = context.WithValue(s.ctx, sessionKey{}, s)
	} else {
		var err error
		if rcv, err = s.startReceiver(name + "-recv"); err != nil {
			_ = conn.Close()
			return err
		}
		defer func() { go rcv.ps.Close() }() // also ends its goroutines
		name += "-ctl"
	}

	c := startCtl(conn, ctx)
	defer c.close()
	if resp3 {
		v, err := c.do(s.ctx, setupTimeout, "hello", "3")
		if err != nil {
			return fmt.Errorf("HELLO 3: %w", err)
		}
		if proto, _ := field(v, "proto").(int64); proto != 3 {
			return fmt.Errorf("HELLO 3 answered protocol %v: this server cannot push invalidations", field(v, "proto"))
		}
	}
	if _, err := c.do(s.ctx, setupTimeout, "client", "setname", name); err != nil {
		return fmt.Errorf("CLIENT SETNAME: %w", err)
	}
	var redirect int64 // 0: none, invalidations come to c itself
	if rcv != nil {
		var err error
		if redirect, err = s.clientID(c, rcv.name); err != nil {
			return err
		}
	}
	args := []any{"client", "tracking", "on"}
	if redirect != 0 {
		args = append(args, "redirect", redirect)
	}
	args = append(args, "bcast")
	for _, p := range s.prefixes {
		if p != "" {
			args = append(args, "prefix", p)
		}
	}
	if _, err := c.do(s.ctx, setupTimeout, args...); err != nil {
		return fmt.Errorf("CLIENT TRACKING: %w", err)
	}
	if err := s.checkTracking(c, redirect); err != nil {
		return err
	}
	// WAIT for no replica answers at once on a master and is an error on
	// a replica, which sees no writes (unlike ROLE or INFO, it needs no
	// admin permission).
	if _, err := c.do(s.ctx, setupTimeout, "wait", 0, 0); err != nil {
		return fmt.Errorf("not a master? WAIT 0 0: %w", err)
	}
	s.markUp()

	for {
		// A WAIT for more replicas than exist blocks heartbeatInterval on
		// the server: it keeps a read in flight, during which go-redis
		// hands RESP3 pushes to pushHandler; its EOF reveals a killed
		// connection at once; its error reveals a demoted master.
		_, err := c.run(s.ctx, heartbeatInterval+heartbeatTimeout, func(ctx context.Context, conn *redis.Conn) (any, error) {
			return conn.Wait(ctx, waitReplicas, heartbeatInterval).Result()
		})
		if err != nil {
			return fmt.Errorf("heartbeat WAIT: %w", err)
		}
		if s.retiring() {
			return s.drain(c, rcv)
		}
		// The connection may have been replaced under the *redis.Conn,
		// or its redirect target lost.
		if err := s.checkTracking(c, redirect); err != nil {
			return err
		}
	}
}

// drain waits until every invalidation the server sent before the
// successor was up has been delivered: a PING sent now is answered after
// them, on the connection that receives them, since the server queues
// invalidations for a change before it reads a later command.
func (s *session) drain(c *ctl, rcv *receiver) error {
	if rcv == nil {
		if _, err := c.do(s.ctx, heartbeatTimeout, "ping"); err != nil {
			return fmt.Errorf("drain PING: %w", err)
		}
		return errDrained
	}
	if err := bounded(s.ctx, heartbeatTimeout, func() error { return rcv.ps.Ping(s.ctx, drainPayload) }); err != nil {
		return fmt.Errorf("drain PING: %w", err)
	}
	select {
	case <-rcv.drained:
		return errDrained
	case <-s.ctx.Done():
		return nil
	case <-time.After(heartbeatInterval + heartbeatTimeout):
		return errors.New("drain PING: no PONG")
	}
}

// drainPayload marks the PONG that ends a RESP2 drain.
const drainPayload = "readthrough-drain"

// receiver is the PubSub a RESP2 session's invalidations are redirected
// to.
type receiver struct {
	ps      *redis.PubSub
	name    string
	drained chan struct{} // closed on the drain PONG
}

// startReceiver subscribes a PubSub to the invalidation channel, and
// starts reading it and pinging it.
func (s *session) startReceiver(name string) (*receiver, error) {
	r := &receiver{ps: s.client.Subscribe(s.ctx), name: name, drained: make(chan struct{})}
	err := bounded(s.ctx, setupTimeout, func() error {
		// The name first: a subscribed RESP2 connection takes no CLIENT
		// command.
		if err := r.ps.ClientSetName(s.ctx, name); err != nil {
			return err
		}
		return r.ps.Subscribe(s.ctx, invalidateChannel)
	})
	if err == nil {
		subscribed := make(chan struct{})
		go s.receive(r, subscribed)
		select {
		case <-subscribed:
			go s.ping(r.ps)
			return r, nil
		case <-s.ctx.Done():
			err = s.ctx.Err()
		case <-time.After(setupTimeout):
			err = errors.New("no subscription confirmed")
		}
	}
	go r.ps.Close()
	return nil, fmt.Errorf("receiver: SUBSCRIBE: %w", err)
}

// receive reads the PubSub until it fails, which ends the session: any
// error, including a timeout with no PONG, and a re-subscription (go-redis
// reconnected, so messages may have been lost in between). go-redis's
// RESP2 PubSub cannot parse the null key list of a flush, and returns an
// error: ending the session is the right answer to that too.
func (s *session) receive(r *receiver, subscribed chan<- struct{}) {
	ready := false
	for {
		d := setupTimeout
		if ready {
			d = heartbeatInterval + heartbeatTimeout
		}
		msg, err := r.ps.ReceiveTimeout(s.ctx, d)
		if err != nil {
			s.fail(fmt.Errorf("receiver: %w", err))
			return
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if ready || m.Kind != "subscribe" || m.Channel != invalidateChannel {
				s.fail(errReconnect)
				return
			}
			ready = true
			close(subscribed)
		case *redis.Message:
			if m.Channel != invalidateChannel {
				continue
			}
			for _, k := range m.PayloadSlice {
				s.h.changed(k)
			}
			switch {
			case m.PayloadSlice != nil:
			case m.Payload != "":
				s.h.changed(m.Payload) // a PUBLISH to the channel: take it as a change
			default:
				// No key at all: a flush, should a go-redis parse the null
				// list into an empty message rather than an error.
				s.fail(errFlushed)
				return
			}
		case *redis.Pong:
			if m.Payload == drainPayload {
				close(r.drained)
				return
			}
		}
	}
}

// ping sends a PING to the receiver every heartbeatInterval; the PONG, or
// any message, keeps receive's deadline from expiring.
func (s *session) ping(ps *redis.PubSub) {
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if err := bounded(s.ctx, heartbeatTimeout, func() error { return ps.Ping(s.ctx) }); err != nil {
			s.fail(fmt.Errorf("receiver: PING: %w", err))
			return
		}
	}
}

// clientID finds the id of the connection named name.
func (s *session) clientID(c *ctl, name string) (int64, error) {
	// A subscribed RESP2 connection is listed as TYPE pubsub; look at the
	// rest too, in case a server classifies it otherwise.
	for _, typ := range []string{"pubsub", "normal"} {
		v, err := c.do(s.ctx, setupTimeout, "client", "list", "type", typ)
		if err != nil {
			return 0, fmt.Errorf("CLIENT LIST: %w", err)
		}
		list, _ := v.(string)
		if id, ok := findClient(list, name); ok {
			return id, nil
		}
	}
	return 0, fmt.Errorf("receiver %s not found in CLIENT LIST", name)
}

// checkTracking checks that the tracking connection still tracks what it
// should: the connection may have been replaced, or its redirect target
// lost.
func (s *session) checkTracking(c *ctl, redirect int64) error {
	v, err := c.do(s.ctx, heartbeatTimeout, "client", "trackinginfo")
	if err != nil {
		return fmt.Errorf("CLIENT TRACKINGINFO: %w", err)
	}
	return verifyTracking(v, redirect, s.prefixes)
}

// verifyTracking checks a CLIENT TRACKINGINFO reply.
func verifyTracking(v any, redirect int64, prefixes []string) error {
	flags := stringsOf(field(v, "flags"))
	if !slices.Contains(flags, "on") || !slices.Contains(flags, "bcast") || slices.Contains(flags, "broken_redirect") {
		return fmt.Errorf("tracking is not on as set (flags %q)", flags)
	}
	if got, _ := field(v, "redirect").(int64); got != redirect {
		return fmt.Errorf("tracking redirects to %d, not %d", got, redirect)
	}
	got := stringsOf(field(v, "prefixes"))
	if len(got) == 0 {
		got = []string{""} // BCAST without PREFIX: every key
	}
	slices.Sort(got)
	if !slices.Equal(got, prefixes) {
		return fmt.Errorf("tracking prefixes %q, not %q", got, prefixes)
	}
	return nil
}

// field returns the value of key in a RESP3 map or a RESP2 flat array of
// pairs, or nil.
func field(v any, key string) any {
	switch v := v.(type) {
	case map[any]any:
		return v[key]
	case []any:
		for i := 0; i+1 < len(v); i += 2 {
			if v[i] == key {
				return v[i+1]
			}
		}
	}
	return nil
}

func stringsOf(v any) []string {
	var out []string
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	case map[any]bool: // a RESP3 set
		for e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// findClient finds the id of the client named name in a CLIENT LIST
// reply.
func findClient(list, name string) (int64, bool) {
	for line := range strings.Lines(list) {
		var id int64
		named := false
		for f := range strings.FieldsSeq(line) {
			switch k, v, _ := strings.Cut(f, "="); k {
			case "id":
				id, _ = strconv.ParseInt(v, 10, 64)
			case "name":
				named = v == name
			}
		}
		if named && id != 0 {
			return id, true
		}
	}
	return 0, false
}

// newConnName returns a name for a link's connection, unique enough to
// find it in CLIENT LIST.
func newConnName(suffix string) string {
	return connNamePrefix + strconv.FormatUint(rand.Uint64(), 36) + suffix
}

// trackedPrefixes returns the prefixes to track for subs: sorted, and
// without any that another covers (Redis rejects overlapping BCAST
// prefixes on one connection).
func trackedPrefixes(subs []*sub) []string {
	ps := make([]string, 0, len(subs))
	for _, sb := range subs {
		ps = append(ps, sb.prefix)
	}
	slices.Sort(ps)
	out := ps[:0]
	for _, p := range ps {
		// Sorted, the strings under a prefix follow it at once.
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// covers reports whether tracking prefixes reports every key under p.
func covers(prefixes []string, p string) bool {
	for _, q := range prefixes {
		if strings.HasPrefix(p, q) {
			return true
		}
	}
	return false
}

// pushHandler receives RESP3 "invalidate" pushes for every connection of
// the client it is registered on, and passes them to the session whose
// command was waiting when the push was read; it ignores the rest.
type pushHandler struct{}

func (pushHandler) HandlePushNotification(ctx context.Context, _ push.NotificationHandlerContext, n []any) error {
	s, ok := ctx.Value(sessionKey{}).(*session)
	if !ok || len(n) < 2 {
		return nil
	}
	switch keys := n[1].(type) {
	case nil:
		s.fail(errFlushed)
	case []any:
		for _, k := range keys {
			if k, ok := k.(string); ok {
				s.h.changed(k)
			}
		}
	}
	return nil
}

// pushConflict returns an error if c hands RESP3 "invalidate" pushes to
// a handler other than pushHandler.
func pushConflict(c *redis.Client) error {
	if c.Options().Protocol == 2 {
		return nil
	}
	switch h := c.GetPushNotificationHandler(invalidatePush).(type) {
	case nil, pushHandler:
		return nil
	default:
		return fmt.Errorf("redisstore: Notify: the client already hands RESP3 invalidate pushes to a %T (go-redis's client-side cache?); use a client without it, or Protocol 2: %w", h, errors.ErrUnsupported)
	}
}

// registerPushHandler makes conn, a connection of c, hand "invalidate"
// pushes to pushHandler. A Conn has the push processor of its client
// (from NewClient), or one of its own (from NewFailoverClient); in the
// first case the handler may be there already, from an earlier session
// or another Store.
func registerPushHandler(c *redis.Client, conn *redis.Conn) error {
	err := conn.RegisterPushNotificationHandler(invalidatePush, pushHandler{}, false)
	if err == nil {
		return nil
	}
	if _, ok := c.GetPushNotificationHandler(invalidatePush).(pushHandler); ok {
		return nil
	}
	if err := pushConflict(c); err != nil {
		return err
	}
	return fmt.Errorf("registering a push handler: %w", err)
}

// ctl runs commands on one connection, one at a time, on a goroutine of
// its own, so a caller can stop waiting for a command that hangs. A
// *redis.Conn must not be used concurrently, and closing it does not
// interrupt a command in flight; so the goroutine closes it, after its
// last command, however long go-redis takes to give that one up.
type ctl struct {
	reqs chan ctlReq
}

type ctlReq struct {
	run func(context.Context, *redis.Conn) (any, error)
	res chan ctlRes // buffered: the goroutine never waits for the caller
}

type ctlRes struct {
	v   any
	err error
}

// startCtl serves commands on conn with ctx, which the push handler reads.
func startCtl(conn *redis.Conn, ctx context.Context) *ctl {
	c := &ctl{reqs: make(chan ctlReq)}
	go func() {
		defer conn.Close()
		for r := range c.reqs {
			v, err := r.run(ctx, conn)
			r.res <- ctlRes{v, err}
		}
	}()
	return c
}

// do runs a command, waiting at most d or until ctx is done.
func (c *ctl) do(ctx context.Context, d time.Duration, args ...any) (any, error) {
	return c.run(ctx, d, func(ctx context.Context, conn *redis.Conn) (any, error) {
		return conn.Do(ctx, args...).Result()
	})
}

func (c *ctl) run(ctx context.Context, d time.Duration, f func(context.Context, *redis.Conn) (any, error)) (any, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	r := ctlReq{run: f, res: make(chan ctlRes, 1)}
	select {
	case c.reqs <- r:
	case <-t.C:
		return nil, fmt.Errorf("the connection is still busy after %v", d)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-r.res:
		return res.v, res.err
	case <-t.C:
		return nil, fmt.Errorf("no reply within %v", d)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// close ends the goroutine once its command in flight, if any, returns.
func (c *ctl) close() { close(c.reqs) }

// bounded runs f on a goroutine of its own and waits at most d for it, or
// until ctx is done.
func bounded(ctx context.Context, d time.Duration, f func() error) error {
	res := make(chan error, 1)
	go func() { res <- f() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-res:
		return err
	case <-t.C:
		return fmt.Errorf("no reply within %v", d)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
