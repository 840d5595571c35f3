package readthrough

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough/internal/entry"
	"github.com/readthrough-go/readthrough/store"
)

// newEntry builds the entry a flight writes back, with the TTL it is
// stored for: a value fresh for TTL (or the loader's own, see SetTTL) and
// kept for this Cache's stale window after it, or a not-found fresh for
// NegativeTTL. took is the load's duration, recorded for early refresh;
// at is when the load began, which the value's freshness counts from: the
// upstream's answer is at least that old, and a value is never served
// longer than its TTL after it, however long the load and the write took.
func (c *Cache[K, V]) newEntry(kind entryKind, payload []byte, took time.Duration, box *ttlBox, at time.Time) (entry.Entry, time.Duration) {
	o := &c.cfg.Options
	fresh, keep := o.TTL, c.cfg.staleWindow()
	k := entry.Value
	switch {
	case kind == kindNotFound:
		k, fresh, keep = entry.NotFound, o.NegativeTTL, 0 // a not-found is never served stale
		if j := c.cfg.negativeJitter(); j > 0 {
			fresh += rand.N(j)
		}
	case box != nil && box.ttl.Load() > 0:
		fresh = time.Duration(box.ttl.Load()) // the upstream said how long: no jitter
		if m := c.cfg.limits.MaxTTL; m > 0 && fresh+keep > m {
			fresh = max(m-keep, time.Millisecond)
		}
	case o.TTLJitter > 0:
		fresh += rand.N(o.TTLJitter)
	}
	fresh = c.roundTTL(fresh)
	e := entry.Entry{Kind: k, Type: c.typ, WrittenAt: at, FreshUntil: at.Add(fresh), LoadDuration: took, Payload: payload}
	if keep > 0 {
		keep = c.roundTTL(keep)
		e.StaleUntil = e.FreshUntil.Add(keep)
	}
	// The store's TTL counts from now: the time since the load is spent.
	ttl := e.FreshUntil.Add(keep).Sub(time.Now())
	if ttl <= 0 {
		ttl = time.Millisecond
	}
	return e, c.roundTTL(ttl)
}

func (c *Cache[K, V]) roundTTL(ttl time.Duration) time.Duration {
	if g := c.cfg.limits.TTLGranularity; g > 0 {
		ttl = (ttl + g - 1) / g * g
	}
	return ttl
}

// tooLarge reports whether an entry is above what the store declared it
// holds, counting it: such an entry is never sent.
func (c *Cache[K, V]) tooLarge(k string, b []byte) bool {
	if m := c.cfg.limits.MaxEntrySize; m > 0 && len(k)+len(b) > m {
		c.stats.oversize.Add(1)
		if c.lastStoreLog.allow() {
			c.log.Warn("readthrough: entry larger than the store accepts; not cached", "key", k, "op", "set", "size", len(k)+len(b), "max", m)
		}
		return true
	}
	return false
}

// writeBack writes a load's entry while the key still holds the flight's
// lease h (h nil: with Lock.Disabled, unconditionally), and never after a
// Set or Delete of the key in this process superseded the flight.
// keep, when not nil, is called instead of dropping this process's near
// copy if the write went in: to keep the value just written as the copy.
func (c *Cache[K, V]) writeBack(fl *flight[V], h *held, e *entry.Entry, ttl time.Duration, keep func(snap)) {
	b := entry.Encode(e)
	if c.tooLarge(fl.key, b) {
		if h != nil {
			c.release(fl, h)
		}
		return
	}
	c.fencedWrite(fl, h, b, ttl, keep)
}

// fencedWrite is the one place a flight writes the key: under the flight's
// write lock, which a Set or Delete in this process takes too, and only if
// none superseded it.
func (c *Cache[K, V]) fencedWrite(fl *flight[V], h *held, b []byte, ttl time.Duration, keep func(snap)) {
	ctx, cancel := c.bgCtx()
	defer cancel()
	deadline := time.Now().Add(c.cfg.StoreTimeout)
	fl.wmu.Lock()
	defer fl.wmu.Unlock()
	if fl.superseded.Load() {
		return
	}
	if h != nil && h.expect != nil {
		// A refresh's lock, beside the value: free it once the value is
		// written (or not), so the next refresh need not wait out its TTL.
		defer c.unlock(h)
	}
	before := c.link.snapshot(fl.key)
	written := false
	if h != nil && c.caps.hasCAS() {
		// Swapped or not, we are done: not swapped means the key changed
		// during the load, and the change stands.
		k, expect := h.target()
		ok, err := c.cas(ctx, k, expect, b, ttl, deadline)
		if err != errUnsupported {
			written = ok && err == nil
			c.afterWrite(fl.key, written, before, keep)
			return
		}
	}
	written = c.put(ctx, fl.key, b, ttl, deadline) == nil
	c.afterWrite(fl.key, written, before, keep)
}

// afterWrite settles this process's near copy of k after its own write:
// kept as the value just written (keep), or else dropped, so no copy from
// before the write survives it (a store that cannot notify would not tell
// this process).
func (c *Cache[K, V]) afterWrite(k string, written bool, before snap, keep func(snap)) {
	if !written || keep == nil || c.near == nil {
		c.invalidateLocal(k)
		return
	}
	keep(before)
}

// rearm is fail-safe after a failed load: the expired value fb is written
// back as fresh for FailSafe.Throttle (never past its fail-safe window),
// so callers are served and the upstream rests. Like a write back, it
// happens only while the key still holds the flight's lease.
func (c *Cache[K, V]) rearm(fl *flight[V], h *held, fb *view[V]) {
	now := time.Now()
	end := fb.m.freshUntil.Add(c.cfg.FailSafe.MaxStale)
	old, err := entry.Decode(fb.raw)
	if !now.Before(end) || err != nil {
		c.release(fl, h)
		return
	}
	e := entry.Entry{Kind: entry.Value, Type: c.typ, WrittenAt: fb.m.writtenAt,
		FreshUntil: earliest(now.Add(c.cfg.FailSafe.Throttle), end), Rearmed: true, OrigFreshUntil: fb.m.freshUntil,
		StaleUntil: end, LoadDuration: fb.m.delta, Payload: old.Payload}
	if fb.m.keepUntil.After(end) {
		e.StaleUntil = fb.m.keepUntil
	}
	c.fencedWrite(fl, h, entry.Encode(&e), c.roundTTL(e.StaleUntil.Sub(now)), nil)
}

func errTooLarge(k string, size, max int) error {
	return fmt.Errorf("readthrough: entry for %q is %d bytes, above the store's %d: %w", k, size, max, store.ErrTooLarge)
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// set is Cache.Set: it supersedes any flight for the key in this process,
// drops the near copy, and writes unconditionally.
func (c *Cache[K, V]) set(ctx context.Context, k string, payload []byte) error {
	e, ttl := c.newEntry(kindValue, payload, c.loadEWMA.get(), nil, time.Now())
	b := entry.Encode(&e)
	if c.tooLarge(k, b) {
		return errTooLarge(k, len(k)+len(b), c.cfg.limits.MaxEntrySize)
	}
	return c.overwrite(ctx, k, func(ctx context.Context, deadline time.Time) error {
		return c.put(ctx, k, b, ttl, deadline)
	})
}

// del is Cache.Delete.
func (c *Cache[K, V]) del(ctx context.Context, k string) error {
	return c.overwrite(ctx, k, func(ctx context.Context, deadline time.Time) error {
		return c.remove(ctx, k, deadline)
	})
}

// overwrite runs a write of this process that must win over anything in
// flight for k: the flights are superseded first (so they write nothing
// after it), their write locks are held during it (so a write already
// under way lands before it, not after), and the near copy is dropped
// before and after (so no read that raced the write keeps the old value).
func (c *Cache[K, V]) overwrite(ctx context.Context, k string, write func(context.Context, time.Time) error) error {
	for _, fl := range []*flight[V]{c.flights.supersede(k), c.refreshing.supersede(k)} {
		if fl != nil {
			fl.wmu.Lock()
			defer fl.wmu.Unlock()
		}
	}
	c.invalidateLocal(k)
	err := write(ctx, c.budget())
	c.invalidateLocal(k)
	if err == ErrBreakerOpen {
		return ErrBreakerOpen
	}
	return err
}

// ewma is a moving average of load durations: XFetch's Δ for values that
// record none (written by Set).
type ewma struct{ v atomic.Int64 }

func (e *ewma) add(d time.Duration) {
	for {
		old := e.v.Load()
		next := int64(d)
		if old != 0 {
			next = old + (int64(d)-old)/8
		}
		if e.v.CompareAndSwap(old, next) {
			return
		}
	}
}

func (e *ewma) get() time.Duration { return time.Duration(e.v.Load()) }
