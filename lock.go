package readthrough

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/readthrough-go/readthrough/internal/backoff"
)

// lockAndLoad is a flight with the distributed lock: take the key's lock
// and load, or wait for the process that holds it.
func (c *Cache[K, V]) lockAndLoad(ctx context.Context, k string, key K, load Loader[K, V], fallback *found[V]) *outcome[V] {
	lk := lockKey(k)
	token := newToken()
	deadline := time.Now().Add(c.cfg.Lock.MaxWait)
	bo := backoff.New(c.cfg.Lock.PollInterval, c.cfg.Lock.MaxPollInterval)
	waited := false
	for {
		won, err := c.acquire(ctx, lk, token)
		if err != nil {
			if ctx.Err() != nil {
				return &outcome[V]{err: ctx.Err()}
			}
			return c.loadAndStore(ctx, k, key, load, fallback) // fail open: no lock
		}
		if won {
			o := c.loadLocked(ctx, k, key, load, lk, token, fallback)
			if waited && o.result.Source == SourceCache {
				o.result.Source = SourceLockWait
			}
			return o
		}
		if !waited {
			waited = true
			c.stats.lockWaits.Add(1)
		}
		// Poll for the value, one Get each time, until it lands, the
		// retake interval is up (loop to try the lock again), or MaxWait.
		for retake := time.Now().Add(c.cfg.Lock.RetakeInterval); ; {
			left := time.Until(deadline)
			if left <= 0 {
				c.stats.lockTimeouts.Add(1)
				return c.loadAndStore(ctx, k, key, load, fallback)
			}
			if err := sleep(ctx, min(bo.Next(), left)); err != nil {
				return &outcome[V]{err: err} // LoadTimeout ended the wait
			}
			f, st, _ := c.read(ctx, k)
			switch st {
			case hit:
				return f.outcome(SourceLockWait)
			case failed:
				if ctx.Err() != nil {
					return &outcome[V]{err: ctx.Err()}
				}
				return c.loadAndStore(ctx, k, key, load, fallback)
			}
			if !time.Now().Before(retake) {
				break // the holder may be gone: try to take the lock
			}
		}
	}
}

// loadLocked runs under the lock: re-check the store, since the previous
// holder may have written the value just before we took the lock, then
// load. The lock is released after the write, whatever happens.
func (c *Cache[K, V]) loadLocked(ctx context.Context, k string, key K, load Loader[K, V], lk string, token []byte, fallback *found[V]) *outcome[V] {
	defer c.release(ctx, lk, token)
	if f, st, _ := c.read(ctx, k); st == hit {
		return f.outcome(SourceCache)
	}
	return c.loadAndStore(ctx, k, key, load, fallback)
}

// outcome makes a fresh entry found by a flight its outcome.
func (f *found[V]) outcome(src Source) *outcome[V] {
	o := &outcome[V]{result: f.Result}
	if f.notFound {
		o.err = ErrNotFound
	}
	if o.result.Source != SourceStale { // a re-armed value stays marked stale
		o.result.Source = src
	}
	return o
}

func (c *Cache[K, V]) acquire(ctx context.Context, lk string, token []byte) (bool, error) {
	if !c.allowStore() {
		return false, errStoreSkipped
	}
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	won, err := c.store.SetIfAbsent(sctx, lk, token, c.cfg.Lock.TTL)
	c.storeDone(ctx, "lock", lk, err)
	return won, err
}

// release deletes our lock: only if it still holds our token when the
// store can compare-and-delete, so a lock that expired and was taken by
// another process is left alone.
func (c *Cache[K, V]) release(ctx context.Context, lk string, token []byte) {
	if !c.allowStore() {
		return // the lock's TTL frees it
	}
	sctx, cancel := c.detachedStoreCtx(ctx)
	defer cancel()
	if c.cad != nil {
		_, err := c.cad.CompareAndDelete(sctx, lk, token)
		if !errors.Is(err, errors.ErrUnsupported) {
			c.storeDone(context.Background(), "unlock", lk, err) // detached: no caller to leave
			return
		}
	}
	err := c.store.Delete(sctx, lk)
	c.storeDone(context.Background(), "unlock", lk, err) // detached: no caller to leave
}

// newToken returns a lock token unique to this flight.
func newToken() []byte {
	return fmt.Appendf(nil, "%016x%016x", rand.Uint64(), rand.Uint64())
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
