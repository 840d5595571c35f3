package readthrough

import (
	"context"
	"math"
	"time"
)

// refreshEarly is XFetch: refresh when now − Δ·β·ln(rand()) ≥ expiry. The
// closer expiry and the slower the last load (Δ), the likelier.
func (c *Cache[K, V]) refreshEarly(delta time.Duration, freshUntil time.Time) bool {
	if delta <= 0 {
		return false
	}
	gap := float64(delta) * c.cfg.EarlyRefresh * -math.Log(c.rand())
	if gap >= float64(math.MaxInt64) {
		return true
	}
	return !time.Now().Add(time.Duration(gap)).Before(freshUntil)
}

// refreshAsync starts a background refresh of k unless one is running for
// it in this process, MaxRefreshes are running, or the Cache is closed.
//
// seen is when the entry the caller read was written: a refresh that finds
// a newer one has nothing to do.
func (c *Cache[K, V]) refreshAsync(callerCtx context.Context, k string, key K, load Loader[K, V], seen time.Time) {
	if _, running := c.refreshing.LoadOrStore(k, struct{}{}); running {
		return
	}
	select {
	case c.refreshSlots <- struct{}{}:
	default:
		c.refreshing.Delete(k)
		c.stats.refreshSkips.Add(1)
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.refreshSlots
		c.refreshing.Delete(k)
		c.stats.refreshSkips.Add(1)
		return
	}
	c.bg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.bg.Done()
		defer c.refreshing.Delete(k)
		defer func() { <-c.refreshSlots }()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(callerCtx), c.cfg.LoadTimeout)
		defer cancel()
		c.refresh(ctx, k, key, load, seen)
	}()
}

// refresh reloads k in the background. Across processes it takes the
// key's lock without waiting: if another process holds it, that process
// is already loading, and this refresh skips.
func (c *Cache[K, V]) refresh(ctx context.Context, k string, key K, load Loader[K, V], seen time.Time) {
	if !c.cfg.Lock.Disabled {
		lk, token := lockKey(k), newToken()
		won, err := c.acquire(ctx, lk, token)
		if err != nil || !won {
			return
		}
		defer c.release(ctx, lk, token)
		// Another process may have refreshed it since we read it.
		if f, st, _ := c.read(ctx, k); st == hit && f.writtenAt.After(seen) {
			return
		}
	}
	c.stats.refreshes.Add(1)
	// A failure leaves the stale value in place; panics are captured and
	// logged by loadAndStore, never raised in this goroutine.
	c.loadAndStore(ctx, k, key, load, nil)
}

// Close stops new background refreshes and waits for running ones to end
// (each is bounded by LoadTimeout). The Cache still serves calls after
// Close, without refreshing in the background. It never fails; the error
// is for io.Closer.
func (c *Cache[K, V]) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.bg.Wait()
	return nil
}
