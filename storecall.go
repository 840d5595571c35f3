package readthrough

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough/internal/breaker"
	"github.com/readthrough-go/readthrough/store"
)

// capabilities are the optional store interfaces found on the store. A
// wrapper may implement one and answer errors.ErrUnsupported at run time;
// the cache then stops using it, as if it were absent.
type capabilities struct {
	cas     store.CompareAndSwapper
	gos     store.GetOrSetter
	cad     store.CompareAndDeleter
	batch   store.Batcher
	notify  store.Notifier
	local   bool // store.NonBlocking: no per-call timeout, writes inline
	bounded bool // store.Bounded: honours ctx itself, no guard goroutine

	noCAS, noGOS, noCAD, noBatch atomic.Bool
}

func (c *capabilities) find(st Store) {
	c.cas, _ = st.(store.CompareAndSwapper)
	c.gos, _ = st.(store.GetOrSetter)
	c.cad, _ = st.(store.CompareAndDeleter)
	c.batch, _ = st.(store.Batcher)
	c.notify, _ = st.(store.Notifier)
	_, c.local = st.(store.NonBlocking)
	_, c.bounded = st.(store.Bounded)
}

func (c *capabilities) hasCAS() bool   { return c.cas != nil && !c.noCAS.Load() }
func (c *capabilities) hasGOS() bool   { return c.gos != nil && !c.noGOS.Load() }
func (c *capabilities) hasCAD() bool   { return c.cad != nil && !c.noCAD.Load() }
func (c *capabilities) hasBatch() bool { return c.batch != nil && !c.noBatch.Load() }

// unsupported reports whether err says a wrapper lacks the capability,
// and if so turns it off for good.
func unsupported(err error, off *atomic.Bool) bool {
	if errors.Is(err, errors.ErrUnsupported) {
		off.Store(true)
		return true
	}
	return false
}

// A store call made for a request is bounded by the request's budget: the
// deadline its first store call set (StoreTimeout after it), so a request
// pays at most one StoreTimeout before its load, however many calls it
// makes. Calls made on their own (write-backs, polls, Set) get a budget of
// their own.
func (c *Cache[K, V]) budget() time.Time { return time.Now().Add(c.cfg.StoreTimeout) }

// call runs one store operation: skipped while the breaker is open,
// bounded by deadline, on a goroutine of its own when the store might not
// honour ctx (so a hung store costs the caller the deadline, not the
// store's own timeouts), and reported to the breaker, Stats, the log and
// the Recorder. A panic in the store reaches the caller, in its goroutine.
func call[K comparable, V, T any](c *Cache[K, V], ctx context.Context, op, k string, deadline time.Time, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	if !c.allowStore() {
		return zero, ErrBreakerOpen
	}
	start := time.Now()
	var v T
	var err error
	if c.caps.local {
		v, err = fn(ctx)
	} else {
		sctx, cancel := context.WithDeadline(ctx, deadline)
		if c.caps.bounded {
			v, err = fn(sctx)
		} else {
			v, err = guarded(c, sctx, fn)
		}
		cancel()
	}
	c.storeDone(ctx, op, k, time.Since(start), err)
	return v, err
}

type guardResult[T any] struct {
	v        T
	err      error
	panicked bool
	p        any
}

// guarded runs fn on a goroutine and returns when it does or ctx ends,
// whichever is first. The goroutine is tracked, so Close waits for a call
// it abandoned; on a tracker of its own, closed after every other
// goroutine has ended, so the writes those make while Close waits still go
// through.
func guarded[K comparable, V, T any](c *Cache[K, V], ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	ch := make(chan guardResult[T], 1)
	if !c.guards.add() {
		var zero T
		return zero, ErrClosed
	}
	go func() {
		defer c.guards.done()
		var r guardResult[T]
		defer func() {
			if p := recover(); p != nil {
				r.panicked, r.p = true, p
				c.log.Error("readthrough: store panicked", "err", fmt.Errorf("panic: %v", p), "stack", string(debug.Stack()))
			}
			ch <- r
		}()
		r.v, r.err = fn(ctx)
	}()
	select {
	case r := <-ch:
		if r.panicked {
			panic(r.p)
		}
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("readthrough: store call abandoned: %w", ctx.Err())
	}
}

func (c *Cache[K, V]) get(ctx context.Context, k string, deadline time.Time) ([]byte, bool, error) {
	if c.caps.local && c.breaker == nil && c.rec == nil {
		// The hit path on an in-process store: no closure, no timer.
		b, ok, err := c.st.Get(ctx, k)
		if err != nil {
			c.storeDone(ctx, "get", k, 0, err)
		}
		return b, ok, err
	}
	type got struct {
		b  []byte
		ok bool
	}
	r, err := call(c, ctx, "get", k, deadline, func(ctx context.Context) (got, error) {
		b, ok, err := c.st.Get(ctx, k)
		return got{b, ok}, err
	})
	return r.b, r.ok, err
}

func (c *Cache[K, V]) getOrSet(ctx context.Context, k string, v []byte, ttl time.Duration, deadline time.Time) ([]byte, bool, error) {
	type got struct {
		b      []byte
		stored bool
	}
	r, err := call(c, ctx, "get-or-set", k, deadline, func(ctx context.Context) (got, error) {
		b, stored, err := c.caps.gos.GetOrSet(ctx, k, v, ttl)
		return got{b, stored}, err
	})
	if err != nil && unsupported(err, &c.caps.noGOS) {
		return nil, false, errUnsupported
	}
	return r.b, r.stored, err
}

func (c *Cache[K, V]) setIfAbsent(ctx context.Context, k string, v []byte, ttl time.Duration, deadline time.Time) (bool, error) {
	return call(c, ctx, "set-if-absent", k, deadline, func(ctx context.Context) (bool, error) {
		return c.st.SetIfAbsent(ctx, k, v, ttl)
	})
}

func (c *Cache[K, V]) put(ctx context.Context, k string, v []byte, ttl time.Duration, deadline time.Time) error {
	_, err := call(c, ctx, "set", k, deadline, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, c.st.Set(ctx, k, v, ttl)
	})
	return err
}

func (c *Cache[K, V]) cas(ctx context.Context, k string, old, v []byte, ttl time.Duration, deadline time.Time) (bool, error) {
	ok, err := call(c, ctx, "compare-and-swap", k, deadline, func(ctx context.Context) (bool, error) {
		return c.caps.cas.CompareAndSwap(ctx, k, old, v, ttl)
	})
	if err != nil && unsupported(err, &c.caps.noCAS) {
		return false, errUnsupported
	}
	return ok, err
}

func (c *Cache[K, V]) cad(ctx context.Context, k string, v []byte, deadline time.Time) (bool, error) {
	ok, err := call(c, ctx, "compare-and-delete", k, deadline, func(ctx context.Context) (bool, error) {
		return c.caps.cad.CompareAndDelete(ctx, k, v)
	})
	if err != nil && unsupported(err, &c.caps.noCAD) {
		return false, errUnsupported
	}
	return ok, err
}

func (c *Cache[K, V]) remove(ctx context.Context, k string, deadline time.Time) error {
	_, err := call(c, ctx, "delete", k, deadline, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, c.st.Delete(ctx, k)
	})
	return err
}

// errUnsupported says a capability turned out to be missing: the caller
// falls back to what a store without it gets.
var errUnsupported = errors.New("readthrough: store capability unsupported")

// allowStore asks the breaker whether a store call may go ahead; a call it
// allows must be reported to storeDone.
func (c *Cache[K, V]) allowStore() bool {
	if c.breaker.Allow() {
		return true
	}
	c.stats.storeSkips.Add(1)
	return false
}

// storeDone reports a store call's outcome: to the breaker, Stats, the
// Recorder, and as a rate-limited log line if it failed. ctx is the
// caller's: an error after it ended is the caller leaving, not the store
// failing. An entry too large for the store is not a failure of the store.
func (c *Cache[K, V]) storeDone(ctx context.Context, op, k string, took time.Duration, err error) {
	if c.rec != nil {
		c.record(Event{Kind: EventStore, Key: k, Op: op, Duration: took, Err: err})
	}
	if c.breaker == nil && err == nil {
		return // the hit path: nothing to report
	}
	switch {
	case err == nil, errors.Is(err, errors.ErrUnsupported):
		// A wrapper without the capability answered at once: the store is
		// fine, and the caller falls back to what it does without it.
		c.breaker.Done(breaker.Success)
	case errors.Is(err, store.ErrTooLarge):
		c.breaker.Done(breaker.Success)
		c.stats.oversize.Add(1)
		if c.lastStoreLog.allow() {
			c.log.Warn("readthrough: entry too large for the store; not cached", "key", k, "op", op, "err", err)
		}
	case ctx.Err() != nil || c.closeCtx.Err() != nil:
		// The caller left, or the cache is closing: nothing learned of the store.
		c.breaker.Done(breaker.Ignored)
	default:
		c.breaker.Done(breaker.Failure)
		n := c.stats.storeErrors.Add(1)
		if c.lastStoreLog.allow() {
			c.log.Warn("readthrough: store error; serving from the loader", "key", k, "op", op, "err", err, "store_errors", n)
		}
	}
}

func (c *Cache[K, V]) breakerChanged(to string) {
	if to == "open" {
		c.log.Warn("readthrough: store circuit breaker open; skipping the store", "op", "breaker", "cool_down", c.cfg.Breaker.CoolDown)
	}
	c.record(Event{Kind: EventBreaker, Outcome: to})
}

// logLimiter lets one log line through every logEvery, so an outage does
// not flood the log.
type logLimiter struct{ last atomic.Int64 }

const logEvery = 10 * time.Second

func (l *logLimiter) allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if last != 0 && now-last < int64(logEvery) {
		return false
	}
	return l.last.CompareAndSwap(last, now)
}

// tracker counts the goroutines the cache starts, so Close can wait for
// them, and refuses new ones once closed.
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{}
	flag   atomic.Bool // closed, for the lock-free check on every call
}

func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n--; t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

func (t *tracker) isClosed() bool { return t.flag.Load() }

// close marks the tracker closed; it reports false if it already was.
func (t *tracker) close() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.closed = true
	t.flag.Store(true)
	return true
}

// wait returns once every tracked goroutine has ended.
func (t *tracker) wait() {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	<-idle
}

// spawn runs f on a tracked goroutine, recovering and logging a panic so
// it never crashes the process. It reports false, running nothing, once
// the cache is closed.
func (c *Cache[K, V]) spawn(what string, f func()) bool {
	if !c.work.add() {
		return false
	}
	go func() {
		defer c.work.done()
		defer func() {
			if p := recover(); p != nil {
				c.log.Error("readthrough: panic in "+what, "err", fmt.Errorf("panic: %v", p), "stack", string(debug.Stack()))
			}
		}()
		f()
	}()
	return true
}

// bgCtx is the context of a write the cache makes on its own (a
// write-back, a lease's release): bounded by StoreTimeout, and not
// cancelled by Close, which waits for it: it carries work already paid for
// (a value loaded), or frees a key other processes wait on.
func (c *Cache[K, V]) bgCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.cfg.StoreTimeout)
}
