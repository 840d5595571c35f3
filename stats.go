package readthrough

import (
	"sync/atomic"
	"time"
)

// Stats are a Cache's counters since [New]: the default [Recorder]'s
// view. Each field counts events, not callers, unless it says otherwise.
type Stats struct {
	Hits         uint64 // calls answered with a fresh cached value, near copies included
	NearHits     uint64 // calls answered from the near cache, with no store call (also counted in Hits, StaleHits or FailSafeHits)
	NegativeHits uint64 // calls answered with a cached not-found (near copies included)
	Misses       uint64 // calls that found nothing servable and joined or started a flight
	Loads        uint64 // loader calls
	LoadErrors   uint64 // loader calls that failed (not-found excluded), panicked, exited or timed out
	Shared       uint64 // calls that joined another caller's load in this process
	LockWaits    uint64 // flights that waited on another process's lease
	LockTimeouts uint64 // flights that gave up waiting after Lock.MaxWait and loaded
	StoreErrors  uint64 // store calls that failed or timed out
	DecodeErrors uint64 // stored entries that did not decode: treated as misses
	EncodeErrors uint64 // loaded values the codec could not encode: not cached
	Oversize     uint64 // entries above the store's size limit: not cached
	StaleHits    uint64 // calls served an expired value: stale-while-revalidate, or SoftLoadTimeout
	FailSafeHits uint64 // calls served an expired value because its load failed (or a re-armed one)
	Refreshes    uint64 // background refreshes that ran the loader
	RefreshSkips uint64 // background refreshes not started: MaxRefreshes running, or another holds the lease
	StoreSkips   uint64 // store calls skipped while the circuit breaker was open
	BreakerOpens uint64 // times the circuit breaker opened
	NearEntries  uint64 // copies the near cache holds now (a gauge)
	NearEvicted  uint64 // near copies dropped: by size, or because their key changed
	NearFlushes  uint64 // times every near copy was dropped: the store's notification link was lost
}

type counters struct {
	nearFresh, // fresh near hits: counted in Hits and NearHits, with one atomic add
	hits, nearHits, negativeHits, misses, loads, loadErrors, shared,
	lockWaits, lockTimeouts, storeErrors, decodeErrors, encodeErrors, oversize,
	staleHits, failSafeHits, refreshes, refreshSkips, storeSkips,
	nearEvicted, nearFlushes atomic.Uint64
}

// Stats returns a snapshot of the counters. Each is read atomically; the
// set is not one consistent instant.
func (c *Cache[K, V]) Stats() Stats {
	s := &c.stats
	st := Stats{
		Hits:         s.hits.Load() + s.nearFresh.Load(),
		NearHits:     s.nearHits.Load() + s.nearFresh.Load(),
		NegativeHits: s.negativeHits.Load(),
		Misses:       s.misses.Load(),
		Loads:        s.loads.Load(),
		LoadErrors:   s.loadErrors.Load(),
		Shared:       s.shared.Load(),
		LockWaits:    s.lockWaits.Load(),
		LockTimeouts: s.lockTimeouts.Load(),
		StoreErrors:  s.storeErrors.Load(),
		DecodeErrors: s.decodeErrors.Load(),
		EncodeErrors: s.encodeErrors.Load(),
		Oversize:     s.oversize.Load(),
		StaleHits:    s.staleHits.Load(),
		FailSafeHits: s.failSafeHits.Load(),
		Refreshes:    s.refreshes.Load(),
		RefreshSkips: s.refreshSkips.Load(),
		StoreSkips:   s.storeSkips.Load(),
		BreakerOpens: c.breaker.Opens(),
		NearEvicted:  s.nearEvicted.Load(),
		NearFlushes:  s.nearFlushes.Load(),
	}
	if c.near != nil {
		st.NearEntries = uint64(c.near.len())
	}
	return st
}

// Recorder receives what happens in a Cache, one [Event] at a time, for
// metrics and traces (see the otelreadthrough module). Set it in
// [Options].Recorder; [Cache.Stats] counts the same events whatever it is.
//
// Record is called synchronously on the path of the event, a near hit
// included, from many goroutines at once: it must be safe for concurrent
// use and cheap (an atomic add, a histogram record), and must not call
// the Cache.
type Recorder interface {
	Record(Event)
}

// EventKind says what an [Event] reports.
type EventKind uint8

// The events a [Recorder] receives.
const (
	// EventHit: a call was answered from what the cache held. Source says
	// how: near, cache, or stale (stale-while-revalidate, a re-armed
	// value, SoftLoadTimeout, or fail-safe after a failed load, which also
	// reports its miss); NotFound marks a cached not-found.
	EventHit EventKind = iota + 1
	// EventMiss: a call found nothing servable and joined or started a
	// flight: it was answered by a load (its Result's Source says loader,
	// shared or lock-wait), or not at all.
	EventMiss
	// EventLoad: a loader call ended, after Duration, with Outcome "ok",
	// "not-found", "error" (Err), "panic", "exit" or "timeout".
	EventLoad
	// EventStore: a store call (Op: "get", "get-or-set", "set",
	// "set-if-absent", "compare-and-swap", "compare-and-delete",
	// "delete", "batch") took Duration and failed with Err, or not.
	EventStore
	// EventLockWait: a flight waited Duration on another's lease, with
	// Outcome "value" (it landed), "leased" (the lease was freed and
	// this flight took it), "timeout" (Lock.MaxWait), "error" (the store
	// failed) or "cancelled".
	EventLockWait
	// EventBreaker: the store circuit breaker changed state, to Outcome
	// "open", "half-open" or "closed".
	EventBreaker
	// EventNearEvict: N near copies were dropped (Outcome "size" or
	// "changed").
	EventNearEvict
	// EventNearFlush: every near copy was dropped (N of them): the
	// store's notification link was lost (Err).
	EventNearFlush
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventHit:
		return "hit"
	case EventMiss:
		return "miss"
	case EventLoad:
		return "load"
	case EventStore:
		return "store"
	case EventLockWait:
		return "lock-wait"
	case EventBreaker:
		return "breaker"
	case EventNearEvict:
		return "near-evict"
	case EventNearFlush:
		return "near-flush"
	}
	return "event(" + string(rune('0'+k)) + ")"
}

// Event is one thing that happened in a Cache. Fields that do not apply
// to its Kind are zero.
type Event struct {
	Kind      EventKind
	Namespace string        // the Cache's Options.Namespace
	Key       string        // the store key, for per-key events
	Source    Source        // EventHit
	NotFound  bool          // EventHit: a cached not-found
	Op        string        // EventStore
	Outcome   string        // EventLoad, EventLockWait, EventBreaker, EventNearEvict
	Duration  time.Duration // EventLoad, EventStore, EventLockWait
	Err       error         // EventLoad ("error"), EventStore, EventNearFlush
	N         int           // EventNearEvict, EventNearFlush
}

func (c *Cache[K, V]) record(e Event) {
	if c.rec != nil {
		e.Namespace = c.ns
		c.rec.Record(e)
	}
}

// answer says how a call was answered, for Stats and the Recorder.
type answer uint8

const (
	ansMiss     answer = iota // nothing servable: the call joined or started a flight
	ansFresh                  // a fresh value
	ansNegative               // a cached not-found
	ansStale                  // stale-while-revalidate, or SoftLoadTimeout
	ansRearmed                // a value fail-safe re-armed
)

// count records how one call was answered. near says it came from the near
// cache; fallback, that fail-safe served it after its load failed.
func (c *Cache[K, V]) count(k string, how answer, src Source, near, fallback bool) {
	s := &c.stats
	if near && how == ansFresh {
		s.nearFresh.Add(1)
		near = false
		how = 255 // counted
	}
	switch how {
	case ansMiss:
		s.misses.Add(1)
	case ansFresh:
		s.hits.Add(1)
	case ansNegative:
		s.negativeHits.Add(1)
	case ansStale:
		s.staleHits.Add(1)
	case ansRearmed:
		s.failSafeHits.Add(1)
	}
	if near {
		s.nearHits.Add(1)
	}
	if fallback {
		s.failSafeHits.Add(1)
	}
	if c.rec == nil {
		return
	}
	if how == ansMiss {
		c.record(Event{Kind: EventMiss, Key: k})
		if !fallback {
			return
		}
		src = SourceStale // a fail-safe value after the miss
	}
	c.record(Event{Kind: EventHit, Key: k, Source: src, NotFound: how == ansNegative})
}
