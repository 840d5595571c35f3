package readthrough

import (
	"context"
	"math"
	"time"
)

// refreshEarly is XFetch: refresh when now − Δ·β·ln(rand()) ≥ expiry. The
// closer expiry and the slower the load (Δ), the likelier. A value that
// records no Δ (written by Set) uses this Cache's recent loads, or 1% of
// TTL before any.
func (c *Cache[K, V]) refreshEarly(delta time.Duration, freshUntil, now time.Time) bool {
	if delta <= 0 {
		if delta = c.loadEWMA.get(); delta <= 0 {
			delta = c.cfg.TTL / 100
		}
	}
	gap := float64(delta) * c.cfg.EarlyRefresh * -math.Log(c.rand())
	if gap >= float64(math.MaxInt64) {
		return true
	}
	return !now.Add(time.Duration(gap)).Before(freshUntil)
}

// refreshAsync starts a background refresh of k, unless one is running for
// it in this process, a load is, or MaxRefreshes are running. Across
// processes the refresh takes the key's lease without waiting: if another
// holds it, that one is already refreshing, and this one skips.
//
// seen is when the entry the caller saw was written: a refresh that finds
// a newer one has nothing to do.
func (c *Cache[K, V]) refreshAsync(callerCtx context.Context, k string, key K, load Loader[K, V], seen time.Time) {
	if c.refreshing.get(k) != nil || c.flights.get(k) != nil {
		return
	}
	if !c.refresh.TryAcquire(1) {
		c.stats.refreshSkips.Add(1)
		return
	}
	first := &view[V]{st: sStale, m: meta{writtenAt: seen}} // only its time is used
	if fl, created := c.startFlight(callerCtx, k, key, load, first, modeRefresh, c.budget()); fl == nil || !created {
		c.refresh.Release(1) // not started: closed, or one runs already
	}
}
