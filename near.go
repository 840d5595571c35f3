package readthrough

import (
	"context"
	"time"

	"github.com/maypok86/otter/v2"
)

// near is the near cache: decoded values in process memory, bounded by
// entry count (otter v2, the fastest Go cache, with a W-TinyLFU policy).
// It has no expiry of its own: each copy carries its entry's meta, and a
// hit classifies it exactly as a store read would, so a copy is never
// served past its entry's freshness or this Cache's stale windows.
type near[V any] struct {
	c *otter.Cache[string, *nearEntry[V]]
}

type nearEntry[V any] struct {
	value V
	m     meta
	gen   uint64    // the link generation it was read under: covered while it lasts
	until time.Time // the MaxAge bound, when not covered
}

// leasedMarker stands for a copy's lease token: a copy keeps none of the
// bytes it was read from, only whether a lease held.
var leasedMarker = []byte{1}

func newNear[V any](maxEntries int, evicted func(n int)) *near[V] {
	c := otter.Must(&otter.Options[string, *nearEntry[V]]{
		MaximumSize: maxEntries,
		OnAtomicDeletion: func(e otter.DeletionEvent[string, *nearEntry[V]]) {
			if e.Cause == otter.CauseOverflow {
				evicted(1)
			}
		},
		// Maintenance runs on the calling goroutine: no goroutine of otter's
		// outlives a call, which keeps the cache usable in synctest bubbles.
		Executor: func(fn func()) { fn() },
	})
	return &near[V]{c: c}
}

func (n *near[V]) get(k string) (*nearEntry[V], bool) { return n.c.GetIfPresent(k) }

func (n *near[V]) put(k string, e *nearEntry[V]) { n.c.Set(k, e) }

// drop removes k's copy and reports whether there was one.
func (n *near[V]) drop(k string) bool {
	_, ok := n.c.Invalidate(k)
	return ok
}

// flush drops every copy, and says how many there were.
func (n *near[V]) flush() int {
	size := n.c.EstimatedSize()
	n.c.InvalidateAll()
	return size
}

func (n *near[V]) len() int { return n.c.EstimatedSize() }

func (c *Cache[K, V]) nearEvicted(n int) {
	c.stats.nearEvicted.Add(uint64(n))
	if c.rec != nil {
		c.record(Event{Kind: EventNearEvict, Outcome: "size", N: n})
	}
}

// nearPut keeps a copy of what a read found, if it may be served and no
// change to the key was reported since the read began.
func (c *Cache[K, V]) nearPut(k string, v *view[V]) {
	if c.near == nil || !v.st.servable() || v.st != sNegative && !v.has || !c.link.unchanged(k, v.snap) {
		return
	}
	m := v.m
	if len(m.token) != 0 {
		m.token = leasedMarker
	}
	c.near.put(k, &nearEntry[V]{value: v.value, m: m, gen: v.snap.gen, until: time.Now().Add(c.cfg.Near.MaxAge)})
}

// nearGet answers a call from the near cache, if the copy may be served.
func (c *Cache[K, V]) nearGet(ctx context.Context, k string, key K, load Loader[K, V]) (Result[V], error, bool) {
	e, ok := c.near.get(k)
	if !ok {
		return Result[V]{}, nil, false
	}
	now := time.Now()
	if !c.link.covers(e.gen) && !now.Before(e.until) {
		c.near.drop(k)
		return Result[V]{}, nil, false
	}
	st := c.classify(&e.m, now, nil)
	if !st.servable() {
		c.near.drop(k)
		return Result[V]{}, nil, false
	}
	r := Result[V]{Value: e.value, Source: SourceNear, Age: now.Sub(e.m.writtenAt), Expires: e.m.freshUntil}
	if st == sStale || st == sRearmed {
		r.Source = SourceStale
	}
	c.count(k, answerOf(st), r.Source, true, false)
	switch st {
	case sNegative:
		return r, c.notFound, true
	case sStale:
		if !e.m.leased(now) {
			c.refreshAsync(ctx, k, key, load, e.m.writtenAt)
		}
	case sFresh:
		if c.cfg.EarlyRefresh > 0 && !e.m.leased(now) && c.refreshEarly(e.m.delta, e.m.freshUntil, now) {
			c.refreshAsync(ctx, k, key, load, e.m.writtenAt)
		}
	}
	return r, nil, true
}
