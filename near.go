package readthrough

import (
	"context"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/readthrough-go/readthrough/internal/entry"
)

// near is the near cache: decoded values in process memory, bounded by
// entry count (otter v2, the fastest Go cache, with a W-TinyLFU policy).
//
// Copies are keyed by K, so a hit derives no store key and allocates
// nothing; the store reports changes by store key, so rev maps a store key
// back to the K whose copy it holds (a KeyFunc that maps two keys to one
// store key keeps one copy: the other's is evicted). There is no expiry of
// otter's: each copy carries its entry's meta, and a hit classifies it as
// a store read would, so a copy is never served past its entry's freshness
// or this Cache's stale windows.
type near[K comparable, V any] struct {
	c *otter.Cache[K, *nearEntry[V]]

	// mu orders a copy's insertion with the invalidations of its key: put
	// checks that nothing changed since the read and inserts under it, and
	// an invalidation drops under it, so none slips between the two.
	mu  sync.Mutex
	rev map[string]K

	goneMu sync.Mutex
	gone   []string // store keys of copies otter evicted by size, to prune from rev
}

type nearEntry[V any] struct {
	value V
	skey  string // its store key
	m     meta
	gen   uint64    // the link generation it was read under: covered while it lasts
	until time.Time // the MaxAge bound, when not covered

	// The same two bounds on the monotonic clock, as time since the
	// Cache's epoch: a hit reads that clock once (time.Since), which costs
	// half of time.Now, the larger part of a near hit on some machines.
	freshMono, untilMono time.Duration
	// ageMono is the value's age at the epoch: its age now is ageMono plus
	// the time since.
	ageMono time.Duration
}

// leasedMarker stands for a copy's lease token: a copy keeps none of the
// bytes it was read from, only whether a lease held.
var leasedMarker = []byte{1}

func newNear[K comparable, V any](maxEntries int, evicted func(n int)) *near[K, V] {
	n := &near[K, V]{rev: make(map[string]K)}
	n.c = otter.Must(&otter.Options[K, *nearEntry[V]]{
		MaximumSize: maxEntries,
		OnAtomicDeletion: func(e otter.DeletionEvent[K, *nearEntry[V]]) {
			if e.Cause == otter.CauseOverflow {
				// Under otter's lock, maybe under ours: note it, prune later.
				n.goneMu.Lock()
				n.gone = append(n.gone, e.Value.skey)
				n.goneMu.Unlock()
				evicted(1)
			}
		},
		// Maintenance runs on the calling goroutine: no goroutine of otter's
		// outlives a call, which keeps the cache usable in synctest bubbles.
		Executor: func(fn func()) { fn() },
	})
	return n
}

func (n *near[K, V]) get(key K) (*nearEntry[V], bool) { return n.c.GetIfPresent(key) }

// put inserts key's copy, unless ok (checked under the lock) says a change
// was reported since the read.
func (n *near[K, V]) put(key K, e *nearEntry[V], ok func() bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !ok() {
		return
	}
	n.prune()
	if old, had := n.rev[e.skey]; had && old != key {
		n.c.Invalidate(old)
	}
	n.rev[e.skey] = key
	n.c.Set(key, e)
}

// prune forgets the store keys of copies otter evicted. n.mu is held.
func (n *near[K, V]) prune() {
	n.goneMu.Lock()
	gone := n.gone
	n.gone = nil
	n.goneMu.Unlock()
	for _, s := range gone {
		if key, ok := n.rev[s]; ok {
			if e, live := n.c.GetIfPresent(key); !live || e.skey != s {
				delete(n.rev, s)
			}
		}
	}
}

// invalidate drops the copy held for store key s, and reports whether
// there was one.
func (n *near[K, V]) invalidate(s string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	key, ok := n.rev[s]
	if !ok {
		return false
	}
	delete(n.rev, s)
	_, dropped := n.c.Invalidate(key)
	return dropped
}

// drop removes key's copy, found unservable on a hit.
func (n *near[K, V]) drop(key K, e *nearEntry[V]) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if cur, ok := n.c.GetIfPresent(key); ok && cur == e {
		n.c.Invalidate(key)
		delete(n.rev, e.skey)
	}
}

// flush drops every copy, and says how many there were.
func (n *near[K, V]) flush() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	size := n.c.EstimatedSize()
	n.c.InvalidateAll()
	clear(n.rev)
	return size
}

func (n *near[K, V]) len() int { return n.c.EstimatedSize() }

func (c *Cache[K, V]) nearEvicted(n int) {
	c.stats.nearEvicted.Add(uint64(n))
	if c.rec != nil {
		defer c.safe("a Recorder") // inside otter's eviction, which would only log it elsewhere
		c.record(Event{Kind: EventNearEvict, Outcome: "size", N: n})
	}
}

// nearPut keeps a copy of what a read of store key k found, if it may be
// served and no change to the key was reported since the read began.
func (c *Cache[K, V]) nearPut(key K, k string, v *view[V]) {
	if c.near == nil || !v.st.servable() || v.st != sNegative && !v.has || !v.snap.ok {
		return
	}
	m := v.m
	if len(m.token) != 0 {
		m.token = leasedMarker
	}
	now := time.Now()
	el := now.Sub(c.epoch)
	e := &nearEntry[V]{value: v.value, skey: k, m: m, gen: v.snap.gen, until: now.Add(c.cfg.Near.MaxAge),
		freshMono: el + m.freshUntil.Sub(now), untilMono: el + c.cfg.Near.MaxAge, ageMono: now.Sub(m.writtenAt) - el}
	c.near.put(key, e, func() bool { return c.link.unchanged(k, v.snap) })
}

// nearGet answers a call from the near cache, if the copy may be served.
// It derives no store key unless it has to (a refresh, an event).
func (c *Cache[K, V]) nearGet(ctx context.Context, key K, load Loader[K, V]) (Result[V], error, bool) {
	e, ok := c.near.get(key)
	if !ok {
		return Result[V]{}, nil, false
	}
	return c.nearServe(ctx, key, load, e, time.Since(c.epoch))
}

// nearServe answers from the copy e, read el after the epoch, unless it may
// not be served. Fetch answers the common case (a fresh, covered value and
// nothing to report) itself, before it gets here.
func (c *Cache[K, V]) nearServe(ctx context.Context, key K, load Loader[K, V], e *nearEntry[V], el time.Duration) (Result[V], error, bool) {
	covered := c.link.covers(e.gen)
	if !covered && el >= e.untilMono {
		c.near.drop(key, e)
		return Result[V]{}, nil, false
	}
	if el < e.freshMono && e.m.kind == entry.Value && c.nearQuiet {
		c.stats.nearFresh.Add(1)
		if c.rec != nil {
			c.record(Event{Kind: EventHit, Key: e.skey, Source: SourceNear})
		}
		return Result[V]{Value: e.value, Source: SourceNear, Age: e.ageMono + el, Expires: e.m.freshUntil}, nil, true
	}
	now := time.Now()
	if !covered && !now.Before(e.until) {
		c.near.drop(key, e)
		return Result[V]{}, nil, false
	}
	st := c.classify(&e.m, now, nil)
	if !st.servable() {
		c.near.drop(key, e)
		return Result[V]{}, nil, false
	}
	r := Result[V]{Value: e.value, Source: SourceNear, Age: now.Sub(e.m.writtenAt), Expires: e.m.freshUntil}
	if st == sStale || st == sRearmed {
		r.Source = SourceStale
	}
	c.count(e.skey, answerOf(st), r.Source, true, false)
	switch st {
	case sNegative:
		return r, c.notFound, true
	case sStale:
		if !e.m.leased(now) {
			c.refreshAsync(ctx, e.skey, key, load, e.m.writtenAt)
		}
	case sFresh:
		if c.cfg.EarlyRefresh > 0 && !e.m.leased(now) && c.refreshEarly(e.m.delta, e.m.freshUntil, now) {
			c.refreshAsync(ctx, e.skey, key, load, e.m.writtenAt)
		}
	}
	return r, nil, true
}
