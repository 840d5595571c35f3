package readthrough

import (
	"bytes"
	"context"
	"crypto/rand"
	"time"

	"github.com/readthrough-go/readthrough/internal/backoff"
	"github.com/readthrough-go/readthrough/internal/entry"
)

// The lease protocol. A key's lease lives in the key itself: a lease entry
// where the key held nothing (or bytes no one can use), or a lease embedded
// in a value being refreshed, so readers keep the value meanwhile. Taking a
// lease is a set-if-absent, or a compare-and-swap from the exact bytes the
// taker read; writing a load back is a compare-and-swap from the exact
// lease bytes, so any change made to the key meanwhile (a Set, a Delete,
// another writer's SET or DEL, another flight's lease after ours expired)
// wins and the load is not cached. A lease is kept alive the same way, and
// released with a compare-and-delete (or a compare-and-swap back to the
// value it was embedded in).
//
// On a store without compare-and-swap, writes back are plain Sets (a
// change made during the load is overwritten), a lease over existing bytes
// is a Set followed by a read to see who won, and leases are not kept
// alive. See package store for what each capability buys.

type acqKind uint8

const (
	acqServe    acqKind = iota // serve what the key holds
	acqLeased                  // this flight holds the lease: load
	acqUnleased                // Lock.Disabled: load, write back unfenced
	acqNoStore                 // a store failure, or Lock.MaxWait: load, touch the store no more
	acqFail                    // the flight's context ended before a load began
	acqSkip                    // a refresh with nothing to do
)

type acquisition[V any] struct {
	kind     acqKind
	how      answer    // acqServe: how callers are answered
	res      Result[V] // acqServe
	err      error     // acqServe (a not-found), acqFail
	refresh  bool      // acqServe of a stale value: start a background refresh
	seen     time.Time // acqServe: when what is served was written
	lease    *held
	fallback *view[V]
}

// held is a lease this flight holds.
type held struct {
	key      string
	token    []byte
	bytes    []byte       // exactly what the key holds while we hold it
	embedded *entry.Entry // the value the lease is embedded in, or nil for a lease entry
	keep     time.Time    // an embedded lease's value: its end in the store

	// A refresh's lock, held beside the value (key is then the lock's
	// key): the write back goes to value, only while it still holds
	// exactly expect, the bytes the refresh read.
	value  string
	expect []byte

	// snap is what the link said before the lease was written, and echoes
	// how many writes of ours to the value key it has not told back yet at
	// most: the lease, then each keep-alive. A near copy of what the flight
	// writes back lets exactly those echoes pass (fewer is safe: a copy
	// evicted too soon; more is not).
	snap   snap
	echoes int
}

// target is the key a write back goes to, and the bytes it must hold.
func (h *held) target() (string, []byte) {
	if h.expect != nil {
		return h.value, h.expect
	}
	return h.key, h.bytes
}

// refreshPrefix starts the key of a refresh's lock. Like the lock keys of
// earlier releases, it starts with NUL, which no value key does (see
// storeKey), and it is outside every namespace's prefix, so taking it
// notifies no one.
const refreshPrefix = "\x00refresh:"

// refreshLock takes the refresh lock of store key k, whose servable value
// v the refresh will replace; another process that holds it is already
// refreshing, and this refresh skips.
func (c *Cache[K, V]) refreshLock(ctx context.Context, k string, v *view[V], token []byte, deadline time.Time, fb *view[V]) acquisition[V] {
	h := &held{key: refreshPrefix + k, token: token, bytes: token, value: k, expect: v.raw}
	stored, err := c.setIfAbsent(ctx, h.key, h.bytes, c.cfg.Lock.TTL, deadline)
	switch {
	case err != nil:
		return c.storeFailed(ctx, k, time.Time{}, err, fb, h)
	case !stored:
		return acquisition[V]{kind: acqSkip}
	}
	return acquisition[V]{kind: acqLeased, lease: h, fallback: fb}
}

// heldOf is the lease a view found to be ours; echoes is how many of its
// writes may not have been told back since the view's snapshot.
func heldOf[V any](k string, v *view[V], echoes int) *held {
	h := &held{key: k, token: v.m.token, bytes: v.raw, snap: v.snap, echoes: echoes}
	if v.m.kind == entry.Value {
		e, _ := entry.Decode(v.raw)
		h.embedded, h.keep = &e, v.m.keepUntil
	}
	return h
}

func newToken() []byte {
	t := make([]byte, entry.TokenSize)
	rand.Read(t)
	return t
}

// leaseEntry is the entry of a lease by token, taken at now.
func (c *Cache[K, V]) leaseEntry(token []byte, now time.Time) []byte {
	return entry.Encode(&entry.Entry{Kind: entry.Lease, Type: c.typ, WrittenAt: now,
		FreshUntil: now.Add(c.cfg.Lock.TTL), Payload: token})
}

// acquire reads the key until there is something to serve, this flight
// holds its lease, or it must load without it. first is what the caller
// read, if it did. A refresh takes the lease of a servable value instead
// of serving it, and gives up where a caller would wait.
func (c *Cache[K, V]) acquire(fl *flight[V], key K, first *view[V], refresh bool, deadline time.Time) acquisition[V] {
	ctx, k := fl.ctx, fl.key
	if c.cfg.Lock.Disabled {
		return c.acquireUnleased(fl, key, first, refresh, deadline)
	}
	token := newToken()
	lease := c.leaseEntry(token, time.Now())
	var fb *view[V]
	w := c.link.watch(k)
	defer c.link.unwatch(k, w)
	var waitStart time.Time
	bo := backoff.New(c.cfg.Lock.PollInterval, c.cfg.Lock.MaxPollInterval)
	v := first
	if v != nil && v.st != sOurs && v.snap.ok && !c.link.unchanged(k, v.snap) {
		// The key changed since the caller read it, before this flight was
		// watching it: that read says nothing any more. (Unless the read
		// leased the key for us: that change was ours.)
		v = nil
	}
	lost := 0          // races for the lease lost in a row: bounded, so bytes that read one way and compare another never spin
	var seen time.Time // a refresh: when the value it set out to replace was written
	if refresh {
		seen, v = first.m.writtenAt, nil
	}
	for {
		if err := ctx.Err(); err != nil {
			c.waitDone(k, waitStart, "cancelled")
			return acquisition[V]{kind: acqFail, err: err, fallback: fb}
		}
		now := time.Now()
		if v == nil {
			if !waitStart.IsZero() {
				deadline = now.Add(c.cfg.StoreTimeout) // after a wait, each poll has a budget of its own
			}
			snap := c.link.snapshot(k)
			var read view[V]
			if c.caps.hasGOS() {
				cur, stored, err := c.getOrSet(ctx, k, lease, c.cfg.Lock.TTL, deadline)
				if err == errUnsupported {
					continue // a wrapper without it: read with Get from now on
				}
				if err != nil {
					return c.storeFailed(ctx, k, waitStart, err, fb, &held{key: k, token: token, bytes: lease})
				}
				if stored {
					c.waitDone(k, waitStart, "leased")
					return acquisition[V]{kind: acqLeased, lease: &held{key: k, token: token, bytes: lease, snap: snap, echoes: 1}, fallback: fb}
				}
				read = c.look(k, cur, true, time.Now(), token)
			} else {
				raw, ok, err := c.get(ctx, k, deadline)
				if err != nil {
					return c.storeFailed(ctx, k, waitStart, err, fb, nil)
				}
				read = c.look(k, raw, ok, time.Now(), token)
			}
			read.snap = snap
			v = &read
			now = time.Now()
		}
		if fb == nil {
			if fb = c.fallbackOf(v, now); fb != nil {
				fl.fallback.Store(fb)
			}
		}
		st := v.st
		if refresh {
			switch {
			case st == sNegative || st == sLeased || v.m.leased(now) && st != sOurs,
				!seen.IsZero() && v.m.writtenAt.After(seen):
				return acquisition[V]{kind: acqSkip} // another is at it, or it is done
			case st.servable() && c.caps.hasCAS():
				// Lease a refresh beside the value, not in it: readers keep
				// the value, and their near copies, until the new one lands.
				return c.refreshLock(ctx, k, v, token, deadline, fb)
			case st.servable():
				st = sExpired // take its lease and reload it
			}
		}
		switch st {
		case sFresh, sNegative, sRearmed, sStale:
			c.nearPut(key, k, v)
			src := SourceCache
			if !waitStart.IsZero() {
				src = SourceLockWait
				c.waitDone(k, waitStart, "value")
			}
			a := acquisition[V]{kind: acqServe, res: v.result(src, now), seen: v.m.writtenAt, how: answerOf(st)}
			if !waitStart.IsZero() {
				a.how = ansMiss // it waited on another's load: a miss, answered by it
			}
			switch st {
			case sNegative:
				a.err = c.notFound
			case sStale:
				a.refresh = !v.m.leased(now)
			}
			return a
		case sOurs:
			// Our own lease, already there: a write whose reply was lost
			// and that the store or its client retried.
			c.waitDone(k, waitStart, "leased")
			return acquisition[V]{kind: acqLeased, lease: heldOf(k, v, v.echoes), fallback: fb}
		case sAbsent:
			stored, err := c.setIfAbsent(ctx, k, lease, c.cfg.Lock.TTL, deadline)
			if err != nil {
				return c.storeFailed(ctx, k, waitStart, err, fb, &held{key: k, token: token, bytes: lease})
			}
			if stored {
				c.waitDone(k, waitStart, "leased")
				return acquisition[V]{kind: acqLeased, lease: &held{key: k, token: token, bytes: lease, snap: v.snap, echoes: 1}, fallback: fb}
			}
			lost++
		case sExpired, sUnusable:
			h, err := c.takeOver(ctx, fl, v, token, deadline)
			if err != nil {
				return c.storeFailed(ctx, k, waitStart, err, fb, h)
			}
			if h != nil {
				h.snap, h.echoes = v.snap, 1
				c.waitDone(k, waitStart, "leased")
				return acquisition[V]{kind: acqLeased, lease: h, fallback: fb}
			}
			lost++
		case sLeased:
			if waitStart.IsZero() {
				waitStart = now
				c.stats.lockWaits.Add(1)
			}
			until := waitStart.Add(c.cfg.Lock.MaxWait)
			if !now.Before(until) {
				c.stats.lockTimeouts.Add(1)
				c.waitDone(k, waitStart, "timeout")
				return acquisition[V]{kind: acqNoStore, fallback: fb}
			}
			if err := c.waitChange(ctx, w, &bo, until); err != nil {
				c.waitDone(k, waitStart, "cancelled")
				return acquisition[V]{kind: acqFail, err: err, fallback: fb}
			}
		}
		if lost > maxLeaseRaces {
			// The key changes under every attempt, or reads differently than
			// it compares (bytes cut on the way): load without the store.
			c.waitDone(k, waitStart, "error")
			return acquisition[V]{kind: acqNoStore, fallback: fb}
		}
		v = nil // read again
	}
}

// maxLeaseRaces bounds the lease attempts a flight loses in a row before it
// loads without the store.
const maxLeaseRaces = 2

// acquireUnleased is acquire with Lock.Disabled: read once, serve or load.
func (c *Cache[K, V]) acquireUnleased(fl *flight[V], key K, first *view[V], refresh bool, deadline time.Time) acquisition[V] {
	v := first
	if v != nil && v.snap.ok && !c.link.unchanged(fl.key, v.snap) {
		v = nil // the key changed since the caller read it: read again
	}
	if v == nil {
		snap := c.link.snapshot(fl.key)
		raw, ok, err := c.get(fl.ctx, fl.key, deadline)
		if err != nil {
			return c.storeFailed(fl.ctx, fl.key, time.Time{}, err, nil, nil)
		}
		read := c.look(fl.key, raw, ok, time.Now(), nil)
		read.snap = snap
		v = &read
	}
	now := time.Now()
	fb := c.fallbackOf(v, now)
	if fb != nil {
		fl.fallback.Store(fb)
	}
	if v.st.servable() && !refresh {
		c.nearPut(key, fl.key, v)
		a := acquisition[V]{kind: acqServe, res: v.result(SourceCache, now), seen: v.m.writtenAt, how: answerOf(v.st)}
		switch v.st {
		case sNegative:
			a.err = c.notFound
		case sStale:
			a.refresh = true
		}
		return a
	}
	return acquisition[V]{kind: acqUnleased, fallback: fb}
}

// storeFailed ends a flight's store use: a failure goes to the loader with
// no more store calls; an ended flight context (LoadTimeout, Close) ends
// the flight. tried is a lease the failed call may have written anyway (a
// reply lost after the server applied it): it is released in the
// background, only if the key still holds exactly it, so other processes
// do not wait out its TTL on a lease nobody holds.
func (c *Cache[K, V]) storeFailed(ctx context.Context, k string, waitStart time.Time, err error, fb *view[V], tried *held) acquisition[V] {
	if tried != nil {
		c.spawn("a lease's release", func() { c.release(nil, tried) })
	}
	if ctx.Err() != nil {
		c.waitDone(k, waitStart, "cancelled")
		return acquisition[V]{kind: acqFail, err: ctx.Err(), fallback: fb}
	}
	c.waitDone(k, waitStart, "error")
	return acquisition[V]{kind: acqNoStore, fallback: fb}
}

func (c *Cache[K, V]) waitDone(k string, start time.Time, how string) {
	if !start.IsZero() && c.rec != nil {
		c.record(Event{Kind: EventLockWait, Key: k, Outcome: how, Duration: time.Since(start)})
	}
}

// takeOver leases a key that holds bytes no one will serve as they are: an
// expired value (the lease goes inside it, so readers with longer stale
// windows keep it), or bytes that are not an entry of ours at all (the
// lease replaces them). It returns nil, nil when the key changed since it
// was read: someone else got there first. On an error it returns the lease
// it tried to write, which the call may have written anyway.
func (c *Cache[K, V]) takeOver(ctx context.Context, fl *flight[V], v *view[V], token []byte, deadline time.Time) (*held, error) {
	k := fl.key
	now := time.Now()
	h := &held{key: k, token: token}
	ttl := c.cfg.Lock.TTL
	if e, err := entry.Decode(v.raw); err == nil && e.Kind == entry.Value && e.Type == c.typ {
		e.LeaseToken, e.LeaseUntil = token, now.Add(c.cfg.Lock.TTL)
		h.bytes, h.embedded, h.keep = entry.Encode(&e), &e, v.m.keepUntil
		ttl = max(time.Until(h.keep), c.cfg.Lock.TTL)
	} else {
		h.bytes = c.leaseEntry(token, now)
	}
	if c.caps.hasCAS() {
		ok, err := c.cas(ctx, k, v.raw, h.bytes, ttl, deadline)
		switch {
		case err == errUnsupported:
		case err != nil:
			return h, err
		case !ok:
			return nil, nil
		default:
			return h, nil
		}
	}
	// No compare-and-swap: write the lease, then read who won. A Set or
	// Delete of this process made meanwhile must not be overwritten: the
	// write is ordered with them by the flight's write lock.
	fl.wmu.Lock()
	if fl.superseded.Load() {
		fl.wmu.Unlock()
		return nil, nil
	}
	err := c.put(ctx, k, h.bytes, ttl, deadline)
	fl.wmu.Unlock()
	if err != nil {
		return h, err
	}
	raw, ok, err := c.get(ctx, k, deadline)
	switch {
	case err != nil:
		return h, err
	case !ok || !bytes.Equal(raw, h.bytes):
		return nil, nil
	}
	return h, nil
}

// waitChange waits until the store says the key changed, a poll is due,
// until passes, or ctx ends. With a store that notifies, polls are rare (a
// safety net); without, they back off from PollInterval to
// MaxPollInterval.
func (c *Cache[K, V]) waitChange(ctx context.Context, w *watcher, bo *backoff.Backoff, until time.Time) error {
	d := bo.Next()
	var changed <-chan struct{}
	if w != nil && c.link.up.Load() {
		d, changed = c.cfg.Lock.NotifiedPollInterval, w.ch
	}
	t := time.NewTimer(min(d, time.Until(until)))
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// keepAliveTicker ticks every third of Lock.TTL while a load runs under a
// lease the store can keep alive (compare-and-swap), so that two ticks can
// be lost before the lease expires; without one it never ticks.
func (c *Cache[K, V]) keepAliveTicker(leased bool) (<-chan time.Time, func()) {
	if !leased || !c.caps.hasCAS() {
		return nil, func() {}
	}
	t := time.NewTicker(max(c.cfg.Lock.TTL/3, time.Millisecond))
	return t.C, t.Stop
}

// loadLeased loads under the lease h, keeping it alive while the loader
// runs, and writes the answer back while the key still holds the lease (h
// nil, with Lock.Disabled: unconditionally, unless a Set or Delete of this
// process superseded the flight). On a store that blocks, callers get the
// answer before the write.
func (c *Cache[K, V]) loadLeased(fl *flight[V], key K, load Loader[K, V], h *held, fb *view[V], refresh bool) {
	if refresh {
		c.stats.refreshes.Add(1)
	}
	defer func() {
		// A panic past the loader (the codec, IsNotFound) still frees the
		// key for the next flight, here or elsewhere; the flight's own
		// recover hands it to the callers.
		if p := recover(); p != nil {
			c.release(fl, h)
			panic(p)
		}
	}()
	ch := c.callLoader(fl, key, load)
	tick, stop := c.keepAliveTicker(h != nil)
	defer stop()
	var r loaded[V]
wait:
	for {
		select {
		case r = <-ch:
			break wait
		case <-tick:
			if !c.keepAlive(fl, h) {
				tick = nil // lost: the write back will find out, and not write
			}
		case <-fl.ctx.Done():
			// LoadTimeout or Close: the loader goes on, its answer is dropped.
			c.stats.loadErrors.Add(1)
			c.record(Event{Kind: EventLoad, Key: fl.key, Outcome: "timeout", Duration: c.cfg.LoadTimeout})
			o := c.failed(fl, fb, fl.ctx.Err())
			if fb != nil && c.closeCtx.Err() == nil {
				c.rearm(fl, h, fb)
			} else {
				c.release(fl, h)
			}
			fl.end(o)
			return
		}
	}
	o, kind, payload := c.judge(fl, r, fb, true)
	var write func()
	switch {
	case kind == kindValue || kind == kindNotFound && c.cfg.NegativeTTL > 0:
		e, ttl := c.newEntry(kind, payload, r.took, fl.ttl, r.start)
		if o.err == nil {
			o.res.Expires = e.FreshUntil
		}
		write = func() {
			c.writeBack(fl, h, &e, ttl, func(before snap) { c.nearKeep(key, fl.key, &e, r.v, h, before) })
		}
	case kind == kindRearm:
		write = func() { c.rearm(fl, h, fb) }
	default:
		write = func() { c.release(fl, h) }
	}
	if c.caps.local {
		write()
		fl.end(o)
		return
	}
	// Callers get the answer now; the flight stays joinable, with it,
	// until the write lands.
	fl.publish(o)
	write()
}

// keepAlive extends the lease by Lock.TTL, only while the key still holds
// it. It reports whether the lease still holds.
func (c *Cache[K, V]) keepAlive(fl *flight[V], h *held) bool {
	now := time.Now()
	next, ttl := h.bytes, c.cfg.Lock.TTL
	var e entry.Entry
	if h.embedded != nil {
		e = *h.embedded
		e.LeaseUntil = now.Add(c.cfg.Lock.TTL)
		next, ttl = entry.Encode(&e), max(time.Until(h.keep), c.cfg.Lock.TTL)
	}
	ok, err := c.cas(fl.ctx, h.key, h.bytes, next, ttl, now.Add(c.cfg.StoreTimeout))
	if err != nil {
		// A failed call says nothing about the lease; it may have written
		// it, and then its echo is to come, which is one more to let pass
		// than may come: not counted (safe), at worst a copy evicted early.
		return err != errUnsupported
	}
	if ok {
		if h.embedded != nil {
			h.bytes, h.embedded = next, &e
		}
		if h.expect == nil {
			h.echoes++ // a write to the value key: one more echo to come
		}
	}
	return ok
}

// release gives the lease back after a load that wrote nothing: a lease
// entry is deleted, an embedded lease is taken out of its value; either
// only while the key still holds exactly our lease.
func (c *Cache[K, V]) release(fl *flight[V], h *held) {
	if h == nil {
		return // Lock.Disabled: no lease
	}
	if fl != nil && h.expect == nil {
		// Ordered with this process's Set and Delete of the key: after one
		// of them, the lease is gone already, and a check-then-delete must
		// not delete what the Set wrote.
		fl.wmu.Lock()
		defer fl.wmu.Unlock()
		if fl.superseded.Load() {
			return
		}
	}
	c.unlock(h)
}

// unlock frees the key h holds (without the flight's write lock: a
// refresh's lock is no key a Set of this process writes).
func (c *Cache[K, V]) unlock(h *held) {
	ctx, cancel := c.bgCtx()
	defer cancel()
	deadline := time.Now().Add(c.cfg.StoreTimeout)
	if h.embedded != nil {
		if !c.caps.hasCAS() {
			return // it lapses at its recorded end; readers ignore it after
		}
		e := *h.embedded
		e.LeaseToken, e.LeaseUntil = nil, time.Time{}
		ttl := time.Until(h.keep)
		if ttl <= 0 {
			ttl = time.Millisecond
		}
		_, _ = c.cas(ctx, h.key, h.bytes, entry.Encode(&e), ttl, deadline)
		return
	}
	if c.caps.hasCAD() {
		if _, err := c.cad(ctx, h.key, h.bytes, deadline); err != errUnsupported {
			return
		}
	}
	// No conditional delete: check, then delete. A lease taken in between
	// by another flight would be deleted too; it then loads once more.
	raw, ok, err := c.get(ctx, h.key, deadline)
	if err == nil && ok && bytes.Equal(raw, h.bytes) {
		_ = c.remove(ctx, h.key, deadline)
	}
}
