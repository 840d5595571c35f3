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
func (c *Cache[K, V]) lockAndLoad(ctx context.Context, k string, key K, load Loader[K, V]) *outcome[V] {
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
			return c.loadAndStore(ctx, k, key, load) // fail open: no lock
		}
		if won {
			o := c.loadLocked(ctx, k, key, load, lk, token)
			if waited && o.result.Source == SourceCache {
				o.result.Source = SourceLockWait
			}
			return o
		}
		if !waited {
			waited = true
			c.stats.lockWaits.Add(1)
		}

		left := time.Until(deadline)
		if left <= 0 {
			c.stats.lockTimeouts.Add(1)
			return c.loadAndStore(ctx, k, key, load)
		}
		if err := sleep(ctx, min(bo.Next(), left)); err != nil {
			return &outcome[V]{err: err} // LoadTimeout ended the wait
		}
		r, st, err := c.read(ctx, k)
		switch st {
		case hit:
			r.Source = SourceLockWait
			return &outcome[V]{result: r, err: err}
		case failed:
			if ctx.Err() != nil {
				return &outcome[V]{err: ctx.Err()}
			}
			return c.loadAndStore(ctx, k, key, load)
		}
		// Still nothing: loop to take the lock if its holder is gone.
	}
}

// loadLocked runs under the lock: re-check the store, since the previous
// holder may have written the value just before we took the lock, then
// load. The lock is released after the write, whatever happens.
func (c *Cache[K, V]) loadLocked(ctx context.Context, k string, key K, load Loader[K, V], lk string, token []byte) *outcome[V] {
	defer c.release(ctx, lk, token)
	if r, st, err := c.read(ctx, k); st == hit {
		return &outcome[V]{result: r, err: err}
	}
	return c.loadAndStore(ctx, k, key, load)
}

func (c *Cache[K, V]) acquire(ctx context.Context, lk string, token []byte) (bool, error) {
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	won, err := c.store.SetIfAbsent(sctx, lk, token, c.cfg.Lock.TTL)
	if err != nil && ctx.Err() == nil {
		c.storeError("lock", lk, err)
	}
	return won, err
}

// release deletes our lock: only if it still holds our token when the
// store can compare-and-delete, so a lock that expired and was taken by
// another process is left alone.
func (c *Cache[K, V]) release(ctx context.Context, lk string, token []byte) {
	sctx, cancel := c.detachedStoreCtx(ctx)
	defer cancel()
	if c.cad != nil {
		_, err := c.cad.CompareAndDelete(sctx, lk, token)
		if err == nil {
			return
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			c.storeError("unlock", lk, err)
			return
		}
	}
	if err := c.store.Delete(sctx, lk); err != nil {
		c.storeError("unlock", lk, err)
	}
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
