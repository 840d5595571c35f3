package readthrough

import (
	"errors"
	"fmt"
	"hash/maphash"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// link is what the store tells this Cache about changes to its keys
// (store.Notifier): it drives near-copy eviction and wakes waiters.
//
// A near copy is trusted to its entry's freshness only if it was read
// while a complete link was connected and the link has stayed connected
// since: gen is odd while it is, and every Connected or Disconnected moves
// it on, so a copy made under an earlier gen is no longer covered. A
// change reported for a key bumps that key's slot in seqs: a read that
// started before the change does not store its copy after it.
type link struct {
	gen  atomic.Uint64 // odd: a complete link is connected
	up   atomic.Bool   // notifications arrive (complete or not): waiters sleep on them
	seed maphash.Seed
	seqs [4096]atomic.Uint32

	mu      sync.Mutex
	watches map[string]*watcher
}

// snap is what a read captures before it goes to the store, so its copy
// is kept only if nothing changed meanwhile.
type snap struct {
	gen uint64
	seq uint32
	ok  bool
}

func (l *link) slot(k string) *atomic.Uint32 {
	return &l.seqs[maphash.String(l.seed, k)%uint64(len(l.seqs))]
}

func (l *link) snapshot(k string) snap {
	return snap{gen: l.gen.Load(), seq: l.slot(k).Load(), ok: true}
}

// unchanged reports whether no change to k was reported since s, and the
// link is as it was.
func (l *link) unchanged(k string, s snap) bool {
	return s.ok && l.gen.Load() == s.gen && l.slot(k).Load() == s.seq
}

// covers reports whether a copy made under gen is still told of changes.
func (l *link) covers(gen uint64) bool { return gen%2 == 1 && l.gen.Load() == gen }

// A watcher is a flight waiting for a key to change.
type watcher struct {
	ch chan struct{} // 1-buffered: a change while the flight reads is not lost
	n  int
}

func (l *link) watch(k string) *watcher {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watches == nil {
		return nil // the store cannot notify
	}
	w := l.watches[k]
	if w == nil {
		w = &watcher{ch: make(chan struct{}, 1)}
		l.watches[k] = w
	}
	w.n++
	return w
}

func (l *link) unwatch(k string, w *watcher) {
	if w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.n--; w.n == 0 {
		delete(l.watches, k)
	}
}

func (w *watcher) wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func (l *link) wake(k string) {
	l.mu.Lock()
	w := l.watches[k]
	l.mu.Unlock()
	if w != nil {
		w.wake()
	}
}

func (l *link) wakeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.watches {
		w.wake()
	}
}

// listen subscribes the Cache to the store's notifications, if it can
// give them, for the keys of its namespace.
func (c *Cache[K, V]) listen() {
	c.link.seed = maphash.MakeSeed()
	if c.caps.notify == nil || c.near == nil && c.cfg.Lock.Disabled {
		return
	}
	c.link.watches = make(map[string]*watcher)
	prefix := ""
	if c.ns != "" {
		prefix = c.ns + ":"
	}
	stop, err := c.caps.notify.Notify(prefix, (*listener[K, V])(c))
	if err != nil {
		if !errors.Is(err, errors.ErrUnsupported) {
			c.log.Warn("readthrough: the store cannot notify changes; near copies live at most Near.MaxAge", "op", "notify", "err", err)
		}
		c.link.mu.Lock()
		c.link.watches = nil
		c.link.mu.Unlock()
		return
	}
	c.stopNotify = stop
}

// listener is the Cache as a store.Listener.
type listener[K comparable, V any] Cache[K, V]

// safe runs a listener method's work on the store's goroutine, where a
// panic (in a Recorder, say) must not crash the process: it is logged.
func (c *Cache[K, V]) safe(what string) {
	if p := recover(); p != nil {
		c.log.Error("readthrough: panic in "+what, "op", "notify", "err", fmt.Errorf("panic: %v", p), "stack", string(debug.Stack()))
	}
}

func (l *listener[K, V]) Connected(complete bool) {
	c := (*Cache[K, V])(l)
	defer c.safe("a notification")
	c.link.up.Store(true)
	if complete {
		for {
			g := c.link.gen.Load()
			if g%2 == 1 || c.link.gen.CompareAndSwap(g, g+1) {
				break
			}
		}
	}
	c.link.wakeAll()
}

func (l *listener[K, V]) Changed(key string) {
	c := (*Cache[K, V])(l)
	defer c.safe("a notification")
	c.link.slot(key).Add(1)
	if c.near != nil && c.near.invalidate(key) {
		c.stats.nearEvicted.Add(1)
		c.record(Event{Kind: EventNearEvict, Key: key, Outcome: "changed", N: 1})
	}
	c.link.wake(key)
}

func (l *listener[K, V]) Disconnected(err error) {
	c := (*Cache[K, V])(l)
	defer c.safe("a notification")
	c.link.up.Store(false)
	for {
		g := c.link.gen.Load()
		if g%2 == 0 || c.link.gen.CompareAndSwap(g, g+1) {
			break
		}
	}
	if c.near != nil {
		n := c.near.flush()
		c.stats.nearFlushes.Add(1)
		c.record(Event{Kind: EventNearFlush, Err: err, N: n})
	}
	c.log.Warn("readthrough: lost the store's change notifications; near copies dropped", "op", "notify", "err", err)
	c.link.wakeAll()
}

// invalidateLocal is a change made by this process: no read that raced it
// may keep a copy from before it.
func (c *Cache[K, V]) invalidateLocal(k string) {
	c.link.slot(k).Add(1)
	if c.near != nil {
		c.near.invalidate(k)
	}
}
