package readthrough

import (
	"context"
	"sync"
	"sync/atomic"
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

	// echoes counts the notifications of this process's own writes still
	// to come for a copy of the value it just wrote (see nearKeep): the
	// first that many changes reported for the key leave the copy be.
	echoes atomic.Int32
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
	if e, live := n.c.GetIfPresent(key); live {
		for left := e.echoes.Load(); left > 0; left = e.echoes.Load() {
			if e.echoes.CompareAndSwap(left, left-1) {
				return false // our own write, told back: the copy is of it
			}
		}
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
func (c *Cache[K, V]) nearPut(key K, k string, v *view[V]) { c.nearPutEcho(key, k, v, 0) }

// nearPutEcho is nearPut; echoes is how many notifications of its own
// writes the copy lets pass (see nearKeep).
func (c *Cache[K, V]) nearPutEcho(key K, k string, v *view[V], echoes int) {
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
	e.echoes.Store(int32(echoes))
	c.near.put(key, e, func() bool { return c.link.unchanged(k, v.snap) })
}

// nearKeep keeps the value this process just wrote to store key k (the
// entry e, holding v) as its near copy, saving the read that would make
// it. The store reports this process's own writes back to it (echoes):
// the lease h was written, maybe kept alive, then the value; all after
// h.snap, and none of them by anyone else, or the value's compare-and-swap
// would have failed. So the echoes still to come are those writes less the
// changes reported since: the copy lets exactly that many pass. Any other
// count (a change of someone else's, or the link lost) and the copy is not
// kept. With no lease (Lock.Disabled), before is the snapshot just before
// the write.
func (c *Cache[K, V]) nearKeep(key K, k string, e *entry.Entry, v V, h *held, before snap) {
	since, writes := before, 1
	if h != nil && h.snap.ok {
		since, writes = h.snap, h.echoes+1
	}
	vw := view[V]{m: metaOf(e), value: v, has: e.Kind == entry.Value}
	vw.st = c.classify(&vw.m, time.Now(), nil)
	seq, gen := c.link.slot(k).Load(), c.link.gen.Load()
	told := int(seq - since.seq)
	if !vw.st.servable() || gen != since.gen || told < 0 || told > writes {
		c.invalidateLocal(k)
		return
	}
	pending := 0
	if c.link.covers(gen) {
		pending = writes - told // a store that tells: its echoes are to come
	} // else no echo will come: the copy lives MaxAge, as any while the link is down
	vw.snap = snap{gen: gen, seq: seq, ok: true}
	c.nearPutEcho(key, k, &vw, pending)
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
