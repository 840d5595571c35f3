package readthrough

import (
	"bytes"
	"context"
	"time"

	"github.com/readthrough-go/readthrough/internal/entry"
)

// state is what a Cache makes of what a key holds, by its own options: the
// writer's stale windows decide how long the bytes stay in the store, the
// reader's decide what it serves of them.
type state uint8

const (
	sAbsent   state = iota // the key holds nothing
	sUnusable              // corrupt, foreign, another type, an expired not-found, a value past every window of ours
	sFresh                 // a fresh value: serve it
	sNegative              // a fresh not-found: serve the not-found error
	sRearmed               // re-armed by fail-safe and within ours: serve it stale, no reload until the throttle ends
	sStale                 // within our stale-while-revalidate window: serve it stale, refresh in the background
	sExpired               // past that, within our fail-safe window: load, with this value as the fallback
	sLeased                // another flight's live lease: wait for it
	sOurs                  // our own lease: a write whose reply was lost, retried
)

// servable reports whether a call may be answered with what the key holds,
// without a load.
func (s state) servable() bool { return s >= sFresh && s <= sStale }

// meta is what the cache needs of an entry to classify it: decoded from
// the store's bytes, and kept with a near copy.
type meta struct {
	kind          entry.Kind
	writtenAt     time.Time
	freshUntil    time.Time // before any re-arming
	throttleUntil time.Time // a re-armed value's new fresh-until
	keepUntil     time.Time // the bytes' end in the store, as the writer set it
	rearmed       bool
	delta         time.Duration // how long the load that wrote it took
	token         []byte        // the lease it carries, if any
	leaseUntil    time.Time
}

func metaOf(e *entry.Entry) meta {
	m := meta{kind: e.Kind, writtenAt: e.WrittenAt, freshUntil: e.FreshUntil, keepUntil: e.FreshUntil,
		delta: e.LoadDuration, token: e.LeaseToken, leaseUntil: e.LeaseUntil}
	if e.StaleUntil.After(m.keepUntil) {
		m.keepUntil = e.StaleUntil
	}
	if e.Rearmed {
		m.rearmed, m.throttleUntil, m.freshUntil = true, e.FreshUntil, e.OrigFreshUntil
	}
	return m
}

// leased reports whether the entry carries a lease that holds at now: a
// lease entry holds while it exists (its TTL ends it), an embedded one
// until its recorded end.
func (m *meta) leased(now time.Time) bool {
	return m.kind == entry.Lease || len(m.token) != 0 && now.Before(m.leaseUntil)
}

// classify applies this Cache's options to an entry at now. token is the
// caller's own lease token, if it has one.
func (c *Cache[K, V]) classify(m *meta, now time.Time, token []byte) state {
	leased := m.leased(now)
	if leased && token != nil && bytes.Equal(m.token, token) {
		return sOurs
	}
	switch m.kind {
	case entry.Lease:
		return sLeased
	case entry.NotFound:
		if now.Before(m.freshUntil) {
			return sNegative
		}
		if leased {
			return sLeased
		}
		return sUnusable
	}
	o := &c.cfg.Options
	switch {
	case now.Before(m.freshUntil):
		return sFresh
	case m.rearmed && now.Before(m.throttleUntil) && c.failSafeCovers(m, now):
		return sRearmed
	case now.Before(m.freshUntil.Add(o.StaleWhileRevalidate)):
		return sStale
	case leased:
		return sLeased
	case c.failSafeCovers(m, now):
		return sExpired
	}
	return sUnusable
}

// failSafeCovers reports whether fail-safe may serve the value at now: it
// is at most FailSafe.MaxStale past its (original) freshness.
func (c *Cache[K, V]) failSafeCovers(m *meta, now time.Time) bool {
	return m.kind == entry.Value && c.cfg.FailSafe.MaxStale > 0 && now.Before(m.freshUntil.Add(c.cfg.FailSafe.MaxStale))
}

// view is a key's bytes as read, classified and, where a value may be
// served or fall back on, decoded.
type view[V any] struct {
	st    state
	raw   []byte // the exact bytes read: a compare-and-swap compares with them
	m     meta
	value V
	has   bool // value is decoded
	snap  snap // what the link said before the read, for the near cache
	// echoes: the read itself wrote a lease (a get-or-lease that stored),
	// whose notification is still to come.
	echoes int
}

// look classifies raw (ok false: the key held nothing) at now, decoding the
// value when the state needs it. An entry that does not decode, or is of
// another value type, is unusable: it is counted and the next load
// overwrites it.
func (c *Cache[K, V]) look(k string, raw []byte, ok bool, now time.Time, token []byte) view[V] {
	if !ok {
		return view[V]{st: sAbsent}
	}
	e, err := entry.Decode(raw)
	if err != nil {
		c.stats.decodeErrors.Add(1)
		return view[V]{st: sUnusable, raw: raw}
	}
	if e.Type != c.typ && e.Kind != entry.Lease {
		c.stats.decodeErrors.Add(1)
		if c.lastTypeLog.allow() {
			c.log.Warn("readthrough: an entry of another value type is in this namespace; two caches of different types share it and overwrite each other",
				"key", k, "op", "get")
		}
		return view[V]{st: sUnusable, raw: raw}
	}
	v := view[V]{raw: raw, m: metaOf(&e)}
	v.st = c.classify(&v.m, now, token)
	if v.st.servable() || v.st == sExpired || v.st == sLeased && c.failSafeCovers(&v.m, now) {
		if e.Kind == entry.Value {
			if v.value, err = c.cfg.Codec.Unmarshal(e.Payload); err != nil {
				c.stats.decodeErrors.Add(1)
				if v.st == sLeased {
					return view[V]{st: sLeased, raw: raw, m: v.m}
				}
				return view[V]{st: sUnusable, raw: raw, m: v.m}
			}
			v.has = true
		}
	}
	return v
}

// result is what a caller gets from a servable view.
func (v *view[V]) result(src Source, now time.Time) Result[V] {
	if v.st == sRearmed || v.st == sStale || v.st == sExpired || v.st == sLeased {
		src = SourceStale
	}
	return Result[V]{Value: v.value, Source: src, Age: now.Sub(v.m.writtenAt), Expires: v.m.freshUntil}
}

// stillCovers returns fb if fail-safe may still serve it now: a fallback
// found when a flight read the key is checked again when it is served,
// since a load (or its timeout) may outlast the window.
func (c *Cache[K, V]) stillCovers(fb *view[V], now time.Time) *view[V] {
	if fb == nil || !c.failSafeCovers(&fb.m, now) {
		return nil
	}
	return fb
}

// fallbackOf returns a copy of v if fail-safe could serve its value.
func (c *Cache[K, V]) fallbackOf(v *view[V], now time.Time) *view[V] {
	if !v.has || !c.failSafeCovers(&v.m, now) {
		return nil
	}
	fb := *v
	return &fb
}

// fetch is Fetch past the near cache: read the store, serve what may be
// served, join or start a flight for the rest. On a store that leases on
// read (store.GetOrSetter) the read is a get-or-lease: a hit costs one
// round trip, and a miss comes back already leased, so the flight it
// starts loads at once.
func (c *Cache[K, V]) fetch(ctx context.Context, k string, key K, load Loader[K, V]) (Result[V], error) {
	deadline := c.budget()
	// What the link said before the read: a near copy is kept, and a
	// flight trusts this read, only if no change was reported since.
	s := c.link.snapshot(k)
	var raw, token []byte
	var ok bool
	var err error
	leaseOnRead := c.caps.hasGOS() && !c.cfg.Lock.Disabled
	if leaseOnRead {
		if fl := c.flights.get(k); fl != nil && fl.joinable() {
			return c.await(ctx, fl, false, time.Time{}) // a flight in progress answers for free
		}
		token = newToken()
		lease := c.leaseEntry(token, time.Now())
		var stored bool
		raw, stored, err = c.getOrSet(ctx, k, lease, c.cfg.Lock.TTL, deadline)
		if stored {
			raw = lease
		}
		ok = true
		if err == errUnsupported {
			leaseOnRead, token = false, nil
		}
	}
	if !leaseOnRead {
		raw, ok, err = c.get(ctx, k, deadline)
	}
	if err != nil {
		if err := ctx.Err(); err != nil {
			return Result[V]{}, err // the caller left
		}
		return c.flightFor(ctx, k, key, load, nil, modeNoStore, deadline)
	}
	now := time.Now()
	v := c.look(k, raw, ok, now, token)
	v.snap = s
	if v.st.servable() {
		c.nearPut(key, k, &v)
		return c.serve(ctx, k, key, load, &v, now)
	}
	first := v // only a miss pays for a copy that outlives the call
	return c.flightFor(ctx, k, key, load, &first, modeStore, deadline)
}

// answerOf says how a servable state answers a call.
func answerOf(st state) answer {
	switch st {
	case sNegative:
		return ansNegative
	case sStale:
		return ansStale
	case sRearmed:
		return ansRearmed
	}
	return ansFresh
}

// serve answers a call with a servable view read from the store, starting
// a background refresh where one is due.
func (c *Cache[K, V]) serve(ctx context.Context, k string, key K, load Loader[K, V], v *view[V], now time.Time) (Result[V], error) {
	r := v.result(SourceCache, now)
	c.count(k, answerOf(v.st), r.Source, false, false)
	switch v.st {
	case sNegative:
		return r, c.notFound
	case sStale:
		if !v.m.leased(now) {
			c.refreshAsync(ctx, k, key, load, v.m.writtenAt)
		}
	case sFresh:
		if c.cfg.EarlyRefresh > 0 && !v.m.leased(now) && c.refreshEarly(v.m.delta, v.m.freshUntil, now) {
			c.refreshAsync(ctx, k, key, load, v.m.writtenAt)
		}
	}
	return r, nil
}

// peek is Peek: the near copy, else one plain read of the store; never a
// lease, never a load, never a refresh.
func (c *Cache[K, V]) peek(ctx context.Context, key K) (Result[V], bool, error) {
	now := time.Now()
	if c.near != nil {
		if e, ok := c.near.get(key); ok && (c.link.covers(e.gen) || now.Before(e.until)) {
			if st := c.classify(&e.m, now, nil); st.servable() {
				r := Result[V]{Value: e.value, Source: SourceNear, Age: now.Sub(e.m.writtenAt), Expires: e.m.freshUntil}
				if st == sStale || st == sRearmed {
					r.Source = SourceStale
				}
				if st == sNegative {
					return r, true, c.notFound
				}
				return r, true, nil
			}
		}
	}
	k := c.Key(key)
	raw, ok, err := c.get(ctx, k, c.budget())
	if err != nil {
		return Result[V]{}, false, err
	}
	v := c.look(k, raw, ok, time.Now(), nil)
	if !v.st.servable() {
		return Result[V]{}, false, nil
	}
	r := v.result(SourceCache, now)
	if v.st == sNegative {
		return r, true, c.notFound
	}
	return r, true, nil
}
