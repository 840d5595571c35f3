package readthrough

import "sync/atomic"

// Stats are a Cache's counters since [New]. Each field counts events, not
// callers, unless it says otherwise.
type Stats struct {
	Hits         uint64 // calls answered with a fresh stored value (a fail-safe re-armed one included)
	NegativeHits uint64 // calls answered with a stored not-found
	Misses       uint64 // calls that found nothing usable in the store
	Loads        uint64 // loader calls
	LoadErrors   uint64 // loader calls that failed (not-found excluded) or panicked
	Shared       uint64 // calls that joined another caller's load in this process
	LockWaits    uint64 // flights that waited on another process's lock
	LockTimeouts uint64 // flights that gave up waiting after Lock.MaxWait and loaded
	StoreErrors  uint64 // store operations that failed or timed out
	DecodeErrors uint64 // stored entries that did not decode: treated as misses
	EncodeErrors uint64 // loaded values the codec could not encode: not cached
	Oversize     uint64 // entries above the store's MaxEntrySize: not cached
	StaleHits    uint64 // calls served an expired value: stale-while-revalidate, or SoftLoadTimeout
	FailSafeHits uint64 // calls served an expired value because its load failed (or a re-armed one)
	Refreshes    uint64 // background refreshes that ran the loader
	RefreshSkips uint64 // background refreshes not started: MaxRefreshes running, or after Close
	StoreSkips   uint64 // store calls skipped while the circuit breaker was open
	BreakerOpens uint64 // times the circuit breaker opened
}

type counters struct {
	hits, negativeHits, misses, loads, loadErrors, shared,
	lockWaits, lockTimeouts, storeErrors, decodeErrors, encodeErrors, oversize,
	staleHits, failSafeHits, refreshes, refreshSkips, storeSkips atomic.Uint64
}

// Stats returns a snapshot of the counters. Each is read atomically; the
// set is not one consistent instant.
func (c *Cache[K, V]) Stats() Stats {
	s := &c.stats
	return Stats{
		Hits:         s.hits.Load(),
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
	}
}
