// Package readthrough is get-or-fetch caching in front of a slow upstream,
// over any byte-level [Store]: Redis or Valkey, Momento, or in memory.
//
// A [Cache] derives a store key from each request key, tries the store,
// and on a miss runs the loader you pass to [Cache.GetOrLoad] once,
// writes its answer back with a TTL, and hands it to every caller that
// asked meanwhile:
//
//	products, err := readthrough.New[int, Product](store, &readthrough.Options[int, Product]{
//		Namespace:   "product",
//		TTL:         10 * time.Minute,
//		NegativeTTL: 30 * time.Second,
//	})
//	p, err := products.GetOrLoad(ctx, 42, repo.Get) // reads "product:42"
//
// # One load per key
//
// Concurrent misses for one key in one process share a single load
// (golang.org/x/sync/singleflight). Processes that share a store also
// share it: the first to win SetIfAbsent on the key's lock loads, the
// others poll the store with backoff and return the value when it lands
// ([SourceLockWait]). A lock holder that dies delays the others by at
// most [LockOptions].MaxWait; the lock's TTL frees the key after that.
//
// # Not found
//
// A loader error matching [ErrNotFound] (or one that
// [Options].IsNotFound accepts) is cached for [Options].NegativeTTL, so
// missing IDs do not hammer the upstream. Other loader errors reach every
// caller that shared the load and are never cached.
//
// # Cancellation and panics
//
// Each caller waits on its own context and returns ctx.Err() when it
// ends. The shared load runs on a context detached from the callers
// (keeping their values, losing their cancellation) and bounded by
// [Options].LoadTimeout, so a value one caller gave up on is still
// cached for the rest. A loader's panic is re-raised in the goroutine of
// every caller that waited on it, with the original value.
//
// # Failure
//
// The store is an optimisation, never a dependency: any store error, or a
// store slower than [Options].StoreTimeout, is counted in [Stats] and the
// loader serves the call. Bytes that do not decode as an entry of this
// Cache's value type are a miss, and the next load overwrites them.
//
// # A slow or failing upstream
//
// Opt-in options keep callers fast and served: [Options].StaleWhileRevalidate
// serves an expired value while one background refresh replaces it;
// [Options].EarlyRefresh refreshes hot keys before they expire (XFetch);
// [Options].FailSafe serves the last good value when a reload fails;
// [Options].SoftLoadTimeout stops waiting for a slow load when a stale value
// is at hand; [Options].Breaker stops calling a failing store for a while.
// Background refreshes end with [Cache.Close].
//
// # Entries
//
// Each stored entry is a small versioned header (value or not-found,
// written-at, fresh-until, a fingerprint of the value type) ahead of the
// [Codec]'s bytes.
package readthrough

import (
	"context"
	"errors"
	"fmt"
	"github.com/readthrough-go/readthrough/store"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough/internal/breaker"
	"github.com/readthrough-go/readthrough/internal/entry"
	"golang.org/x/sync/singleflight"
)

// ErrNotFound is what a loader returns, wrapped or not, when the upstream
// has nothing for a key; callers get an error matching it, from the
// loader or from a cached not-found.
var ErrNotFound = errors.New("readthrough: not found")

// Loader loads the value for key from the upstream. It runs on a context
// detached from the callers that wait on it, bounded by
// [Options].LoadTimeout.
type Loader[K comparable, V any] func(ctx context.Context, key K) (V, error)

// Source says where a [Result] came from.
type Source int

const (
	// SourceCache: read from the store. A cached not-found too, with an
	// error matching ErrNotFound.
	SourceCache Source = iota
	// SourceLoader: this call ran the loader.
	SourceLoader
	// SourceShared: this call joined a load that another caller in this
	// process started.
	SourceShared
	// SourceLockWait: this call waited on another process's lock, then
	// read that process's result from the store.
	SourceLockWait
	// SourceStale: an expired value, served by stale-while-revalidate,
	// by fail-safe after a failed load, or after SoftLoadTimeout.
	SourceStale
)

// String names the source: "cache", "loader", "shared", "lock-wait" or
// "stale", as a log field or an x-cache header would show it.
func (s Source) String() string {
	switch s {
	case SourceCache:
		return "cache"
	case SourceLoader:
		return "loader"
	case SourceShared:
		return "shared"
	case SourceLockWait:
		return "lock-wait"
	case SourceStale:
		return "stale"
	}
	return fmt.Sprintf("Source(%d)", int(s))
}

// Result is a value with what is known about where it came from.
type Result[V any] struct {
	Value  V
	Source Source
	// Age is how long ago the value was loaded (by any process); zero
	// when this call's own flight loaded it.
	Age time.Duration
	// Expires is when the stored entry stops being served; zero if the
	// value was not stored (a store failure, an uncached error).
	Expires time.Time
}

// Cache is a read-through cache of V values keyed by K over a [Store].
// It is safe for concurrent use; create it with [New].
type Cache[K comparable, V any] struct {
	store Store
	cad   store.CompareAndDeleter // nil when the store has no owner-safe delete
	local bool                    // the store is NonBlocking: no timeout needed
	cfg   config[K, V]
	typ   uint32 // fingerprint of V in entry headers
	log   *slog.Logger

	group   singleflight.Group
	stats   counters
	lastLog atomic.Int64     // Unix nanoseconds of the last store-error log line
	breaker *breaker.Breaker // nil when Options.Breaker is off
	rand    func() float64   // for XFetch; replaced by tests

	// Background refreshes (stale-while-revalidate, early refresh).
	refreshSlots chan struct{} // bounds how many run at once
	refreshing   sync.Map      // store key -> struct{}: one refresh per key
	mu           sync.Mutex    // guards closed against bg.Add
	closed       bool
	bg           sync.WaitGroup
}

// New returns a Cache over store. A nil opts means every default. It fails
// on a nil store, a negative duration, a TTL above the store's [Limits],
// or a key type with no default key function and no [Options].KeyFunc.
func New[K comparable, V any](st Store, opts *Options[K, V]) (*Cache[K, V], error) {
	cfg, err := newConfig(st, opts)
	if err != nil {
		return nil, err
	}
	c := &Cache[K, V]{
		store:        st,
		cfg:          *cfg,
		typ:          entry.TypeOf[V](),
		log:          cfg.Logger,
		rand:         rand.Float64,
		refreshSlots: make(chan struct{}, cfg.MaxRefreshes),
	}
	c.cad, _ = st.(store.CompareAndDeleter)
	_, c.local = st.(store.NonBlocking)
	if cfg.Breaker.Failures > 0 {
		c.breaker = breaker.New(cfg.Breaker.Failures, cfg.Breaker.CoolDown)
	}
	return c, nil
}

// Key returns the store key for key: the namespace, a colon, then the
// derived key (hashed when longer than [MaxKeyLen]). Use it in logs, or to
// let another writer address the same entries.
func (c *Cache[K, V]) Key(key K) string {
	return storeKey(c.cfg.Namespace, c.cfg.KeyFunc(key))
}

// GetOrLoad returns the value for key from the store, or from load on a
// miss, caching what load returns. See [Cache.Fetch].
func (c *Cache[K, V]) GetOrLoad(ctx context.Context, key K, load Loader[K, V]) (V, error) {
	r, err := c.Fetch(ctx, key, load)
	return r.Value, err
}

var errNilLoader = errors.New("readthrough: nil loader")

// Fetch is [Cache.GetOrLoad] with the [Result]'s provenance.
//
// On a hit it returns the stored value, or for a cached not-found an
// error matching [ErrNotFound]. On a miss, the first caller for the key
// in this process starts a flight: it takes the key's distributed lock
// (unless disabled), re-checks the store, calls load, and writes the
// answer back. Every caller for the key meanwhile waits for that flight,
// each on its own ctx. A loader error is returned to all of them; a
// not-found is wrapped so it matches ErrNotFound too.
//
// If load panics, Fetch panics with the same value in every waiting
// caller's goroutine.
//
// With the options for a slow or failing upstream, an expired value may be
// returned instead ([SourceStale]): at once while it is refreshed in the
// background (StaleWhileRevalidate), in place of a failed load (FailSafe),
// or when the load outlasts SoftLoadTimeout.
func (c *Cache[K, V]) Fetch(ctx context.Context, key K, load Loader[K, V]) (Result[V], error) {
	if load == nil {
		return Result[V]{}, errNilLoader
	}
	k := c.Key(key)
	f, st, _ := c.read(ctx, k)
	var fallback *found[V] // an expired value fail-safe may serve
	switch st {
	case hit:
		if f.notFound {
			c.stats.negativeHits.Add(1)
			return f.Result, ErrNotFound
		}
		c.stats.hits.Add(1)
		if f.Source == SourceStale {
			c.stats.failSafeHits.Add(1) // a re-armed value
		} else if c.cfg.EarlyRefresh > 0 && c.refreshEarly(f.delta, f.freshUntil) {
			c.refreshAsync(ctx, k, key, load, f.writtenAt)
		}
		return f.Result, nil
	case stale:
		if time.Now().Before(f.freshUntil.Add(c.cfg.StaleWhileRevalidate)) {
			c.stats.staleHits.Add(1)
			c.refreshAsync(ctx, k, key, load, f.writtenAt)
			return f.Result, nil
		}
		fb := f // a copy, so f itself stays on the stack on the hit path
		fallback = &fb
	case failed:
		// A done ctx: the caller has left. Any other store error falls
		// through to the loader.
		if err := ctx.Err(); err != nil {
			return Result[V]{}, err
		}
	}
	c.stats.misses.Add(1)

	leader := false
	ch := c.group.DoChan(k, func() (any, error) {
		leader = true
		return c.flight(ctx, k, key, load, fallback), nil
	})
	var soft <-chan time.Time
	if fallback != nil && c.cfg.SoftLoadTimeout > 0 {
		t := time.NewTimer(c.cfg.SoftLoadTimeout)
		defer t.Stop()
		soft = t.C
	}
	select {
	case res := <-ch:
		o := res.Val.(*outcome[V])
		if fallback != nil && o.failed() {
			c.stats.failSafeHits.Add(1)
			return fallback.Result, nil
		}
		if o.panicked {
			panic(o.panicValue)
		}
		r := o.result
		if !leader {
			r.Source = SourceShared
			c.stats.shared.Add(1)
		}
		return r, o.err
	case <-soft:
		// The load goes on, and caches its result when it lands.
		c.stats.staleHits.Add(1)
		return fallback.Result, nil
	case <-ctx.Done():
		return Result[V]{}, ctx.Err()
	}
}

// Set stores value under key with the configured TTL, replacing what is
// there. Use it to write through after an update. Unlike reads, it
// returns the store's error.
func (c *Cache[K, V]) Set(ctx context.Context, key K, value V) error {
	payload, err := c.cfg.Codec.Marshal(value)
	if err != nil {
		return fmt.Errorf("readthrough: encode: %w", err)
	}
	_, err = c.write(ctx, c.Key(key), entry.Value, payload, 0)
	return err
}

// Delete removes key's entry, value or not-found, so the next call loads.
// A load already in flight may still write its result afterwards.
func (c *Cache[K, V]) Delete(ctx context.Context, key K) error {
	if !c.allowStore() {
		return errStoreSkipped
	}
	k := c.Key(key)
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	err := c.store.Delete(sctx, k)
	c.storeDone(ctx, "delete", k, err)
	return err
}

// outcome is what a flight hands to every caller that waited on it.
type outcome[V any] struct {
	result     Result[V]
	err        error
	panicked   bool
	panicValue any
}

// failed reports whether the load failed: a panic, or an error that is not
// a not-found (a not-found is an answer).
func (o *outcome[V]) failed() bool {
	return o.panicked || o.err != nil && !errors.Is(o.err, ErrNotFound)
}

// flight runs one shared load for store key k. It runs in a goroutine of
// singleflight's, so it must not panic: a loader panic is captured into
// the outcome and re-raised by each caller.
//
// fallback, when not nil, is the expired value the leader found: if the
// load fails, fail-safe re-arms it in the store.
func (c *Cache[K, V]) flight(callerCtx context.Context, k string, key K, load Loader[K, V], fallback *found[V]) *outcome[V] {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(callerCtx), c.cfg.LoadTimeout)
	defer cancel()
	if c.cfg.Lock.Disabled {
		return c.loadAndStore(ctx, k, key, load, fallback)
	}
	return c.lockAndLoad(ctx, k, key, load, fallback)
}

// loadAndStore calls load and writes its answer back. If the load fails
// and fallback is set, fail-safe re-arms the fallback instead.
func (c *Cache[K, V]) loadAndStore(ctx context.Context, k string, key K, load Loader[K, V], fallback *found[V]) *outcome[V] {
	c.stats.loads.Add(1)
	start := time.Now()
	v, p, err := callLoader(ctx, key, load)
	took := time.Since(start)
	if p != nil {
		c.stats.loadErrors.Add(1)
		c.log.Error("readthrough: loader panicked", "key", k, "panic", p.value, "stack", string(p.stack))
		c.rearm(ctx, k, fallback)
		return &outcome[V]{panicked: true, panicValue: p.value}
	}
	o := &outcome[V]{result: Result[V]{Value: v, Source: SourceLoader}}
	switch {
	case err == nil:
		payload, merr := c.cfg.Codec.Marshal(v)
		if merr != nil {
			c.stats.encodeErrors.Add(1)
			c.log.Error("readthrough: encode failed; value not cached", "key", k, "err", merr)
			return o
		}
		o.result.Expires, _ = c.write(ctx, k, entry.Value, payload, took)
	case c.isNotFound(err):
		o.err = notFound(err)
		if c.cfg.NegativeTTL > 0 {
			o.result.Expires, _ = c.write(ctx, k, entry.NotFound, nil, took)
		}
	default:
		c.stats.loadErrors.Add(1)
		o.err = err
		c.rearm(ctx, k, fallback)
	}
	return o
}

type loaderPanic struct {
	value any
	stack []byte
}

func callLoader[K comparable, V any](ctx context.Context, key K, load Loader[K, V]) (v V, p *loaderPanic, err error) {
	defer func() {
		if r := recover(); r != nil {
			p = &loaderPanic{value: r, stack: debug.Stack()}
		}
	}()
	v, err = load(ctx, key)
	return v, nil, err
}

// write stores a loaded entry under k: a value fresh for TTL and kept for
// the stale window after it, or a not-found fresh for NegativeTTL. took is
// the load's duration, recorded for early refresh. It returns when the
// entry stops being fresh, or the zero time if it was not stored.
func (c *Cache[K, V]) write(ctx context.Context, k string, kind entry.Kind, payload []byte, took time.Duration) (time.Time, error) {
	fresh, keep := c.cfg.TTL, c.cfg.staleWindow()
	if kind == entry.NotFound {
		fresh, keep = c.cfg.NegativeTTL, 0 // a not-found is never served stale
	}
	if j := c.cfg.TTLJitter; j > 0 {
		fresh += rand.N(j)
	}
	fresh = c.roundTTL(fresh)
	now := time.Now()
	e := entry.Entry{Kind: kind, Type: c.typ, WrittenAt: now, FreshUntil: now.Add(fresh), Payload: payload}
	if took > 0 {
		e.Ext = entry.AppendInt64(e.Ext, entry.ExtLoadDuration, int64(took))
	}
	if keep > 0 {
		keep = c.roundTTL(keep)
		e.Ext = entry.AppendInt64(e.Ext, entry.ExtStaleUntil, now.Add(fresh+keep).UnixNano())
	}
	if err := c.put(ctx, k, entry.Encode(e), fresh+keep); err != nil {
		return time.Time{}, err
	}
	return e.FreshUntil, nil
}

// rearm is fail-safe after a failed load: the expired value is written back
// as fresh for FailSafe.Throttle (never past its fail-safe window), so
// callers are served and the upstream rests.
func (c *Cache[K, V]) rearm(ctx context.Context, k string, fb *found[V]) {
	if fb == nil || c.cfg.FailSafe.MaxStale <= 0 {
		return
	}
	now := time.Now()
	end := fb.fallbackEnd(c.cfg.FailSafe.MaxStale)
	if !now.Before(end) {
		return
	}
	e := entry.Entry{Kind: entry.Value, Type: c.typ, WrittenAt: fb.writtenAt, Payload: fb.payload}
	e.FreshUntil = earliest(now.Add(c.cfg.FailSafe.Throttle), end)
	e.Ext = entry.AppendInt64(nil, entry.ExtStaleUntil, end.UnixNano())
	e.Ext = entry.AppendByte(e.Ext, entry.ExtFlags, entry.FlagRearmed)
	if d := fb.delta; d > 0 {
		e.Ext = entry.AppendInt64(e.Ext, entry.ExtLoadDuration, int64(d))
	}
	_ = c.put(ctx, k, entry.Encode(e), c.roundTTL(end.Sub(now)))
}

func (c *Cache[K, V]) roundTTL(ttl time.Duration) time.Duration {
	if g := c.cfg.limits.TTLGranularity; g > 0 {
		ttl = (ttl + g - 1) / g * g
	}
	return ttl
}

// put writes encoded bytes, detached from ctx's cancellation so a value
// whose callers all left is still cached.
func (c *Cache[K, V]) put(ctx context.Context, k string, b []byte, ttl time.Duration) error {
	if max := c.cfg.limits.MaxEntrySize; max > 0 && len(b) > max {
		c.stats.oversize.Add(1)
		c.logStore("readthrough: entry larger than the store accepts; not cached", "key", k, "size", len(b), "max", max)
		return fmt.Errorf("readthrough: entry of %d bytes is above the store's limit of %d", len(b), max)
	}
	if !c.allowStore() {
		return errStoreSkipped
	}
	sctx, cancel := c.detachedStoreCtx(ctx)
	defer cancel()
	err := c.store.Set(sctx, k, b, ttl)
	c.storeDone(context.Background(), "set", k, err) // detached: no caller to leave
	return err
}

// status is what a read of the store found.
type status int

const (
	miss   status = iota // nothing usable: absent, expired past every window, corrupt
	hit                  // a fresh value, or a fresh not-found
	stale                // an expired value still within its stale window
	failed               // the store failed, was skipped, or ctx ended: err says which
)

// found is a decoded entry: the Result a caller may get, and what the
// cache needs to refresh or re-arm it.
type found[V any] struct {
	Result[V]
	notFound   bool
	writtenAt  time.Time
	freshUntil time.Time
	staleUntil time.Time     // the bytes are servable (stale) until then
	delta      time.Duration // how long the load that wrote it took
	payload    []byte        // the codec's bytes, for re-arming
}

// fallbackEnd is when the value stops being servable by fail-safe.
func (f *found[V]) fallbackEnd(maxStale time.Duration) time.Time {
	return earliest(f.staleUntil, f.freshUntil.Add(maxStale))
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// read looks k up and decodes what it finds. Store errors are counted and
// logged here; callers decide whether to fall back.
func (c *Cache[K, V]) read(ctx context.Context, k string) (found[V], status, error) {
	if !c.allowStore() {
		return found[V]{}, failed, errStoreSkipped
	}
	sctx, cancel := c.storeCtx(ctx)
	b, ok, err := c.store.Get(sctx, k)
	cancel()
	if err != nil {
		c.storeDone(ctx, "get", k, err)
		return found[V]{}, failed, err
	}
	c.storeDone(ctx, "get", k, nil)
	if !ok {
		return found[V]{}, miss, nil
	}
	e, err := entry.Decode(b)
	if err != nil || e.Type != c.typ {
		c.stats.decodeErrors.Add(1)
		return found[V]{}, miss, nil
	}
	now := time.Now()
	fresh := e.Fresh(now)
	f := found[V]{writtenAt: e.WrittenAt, freshUntil: e.FreshUntil, staleUntil: e.FreshUntil, payload: e.Payload}
	if !fresh {
		if e.Kind == entry.NotFound {
			return found[V]{}, miss, nil
		}
		if su, ok := e.Int64(entry.ExtStaleUntil); ok && su > e.FreshUntil.UnixNano() {
			f.staleUntil = time.Unix(0, su)
		}
		if !now.Before(f.staleUntil) {
			return found[V]{}, miss, nil
		}
	}
	if c.cfg.EarlyRefresh > 0 {
		if d, ok := e.Int64(entry.ExtLoadDuration); ok {
			f.delta = time.Duration(d)
		}
	}
	f.Result = Result[V]{Source: SourceCache, Age: now.Sub(e.WrittenAt), Expires: e.FreshUntil}
	if e.Kind == entry.NotFound {
		f.notFound = true
		return f, hit, nil
	}
	if f.Value, err = c.cfg.Codec.Unmarshal(e.Payload); err != nil {
		c.stats.decodeErrors.Add(1)
		return found[V]{}, miss, nil
	}
	if !fresh {
		f.Source = SourceStale
		return f, stale, nil
	}
	if e.Flags()&entry.FlagRearmed != 0 {
		f.Source = SourceStale // fresh again only because fail-safe re-armed it
	}
	return f, hit, nil
}

// storeCtx bounds a store call made on a caller's behalf by StoreTimeout,
// without the cost of a new context when ctx already ends sooner.
func (c *Cache[K, V]) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.local {
		return ctx, nop
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= c.cfg.StoreTimeout {
		return ctx, nop
	}
	return context.WithTimeout(ctx, c.cfg.StoreTimeout)
}

func nop() {}

// detachedStoreCtx is for writes and lock releases that must happen even
// when the flight's own context has ended.
func (c *Cache[K, V]) detachedStoreCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), c.cfg.StoreTimeout)
}

// errStoreSkipped is what a store call returns while the breaker is open.
var errStoreSkipped = errors.New("readthrough: store skipped: circuit breaker open")

// allowStore asks the breaker whether a store call may go ahead; a call it
// allows must be reported to storeDone.
func (c *Cache[K, V]) allowStore() bool {
	if c.breaker.Allow() {
		return true
	}
	c.stats.storeSkips.Add(1)
	return false
}

// storeDone reports a store call's outcome: to the breaker, and as a
// counted, rate-limited log line if it failed. ctx is the caller's: an
// error after it ended is the caller leaving, not the store failing.
func (c *Cache[K, V]) storeDone(ctx context.Context, op, k string, err error) {
	if c.breaker == nil && err == nil {
		return // the hit path: nothing to report
	}
	switch {
	case err == nil:
		c.breaker.Done(breaker.Success)
	case ctx.Err() != nil:
		c.breaker.Done(breaker.Ignored)
	default:
		opened := c.breaker.Opens()
		c.breaker.Done(breaker.Failure)
		c.storeError(op, k, err)
		if c.breaker.Opens() != opened {
			c.log.Warn("readthrough: store circuit breaker open; skipping the store", "cool_down", c.cfg.Breaker.CoolDown)
		}
	}
}

// storeError counts a store failure and logs it, at most once every
// logEvery, so an outage does not flood the log.
func (c *Cache[K, V]) storeError(op, k string, err error) {
	n := c.stats.storeErrors.Add(1)
	c.logStore("readthrough: store error; serving from the loader", "op", op, "key", k, "err", err, "store_errors", n)
}

const logEvery = 10 * time.Second

func (c *Cache[K, V]) logStore(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := c.lastLog.Load()
	if last != 0 && now-last < int64(logEvery) || !c.lastLog.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn(msg, args...)
}
