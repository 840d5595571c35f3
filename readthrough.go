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
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync/atomic"
	"time"

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
)

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
	cad   CompareAndDeleter // nil when the store has no owner-safe delete
	local bool              // the store is NonBlocking: no timeout needed
	cfg   config[K, V]
	typ   uint32 // fingerprint of V in entry headers
	log   *slog.Logger

	group   singleflight.Group
	stats   counters
	lastLog atomic.Int64 // Unix nanoseconds of the last store-error log line
}

// New returns a Cache over store. A nil opts means every default. It fails
// on a nil store, a negative duration, a TTL above the store's [Limits],
// or a key type with no default key function and no [Options].KeyFunc.
func New[K comparable, V any](store Store, opts *Options[K, V]) (*Cache[K, V], error) {
	cfg, err := newConfig(store, opts)
	if err != nil {
		return nil, err
	}
	c := &Cache[K, V]{store: store, cfg: *cfg, typ: entry.TypeOf[V](), log: cfg.Logger}
	c.cad, _ = store.(CompareAndDeleter)
	_, c.local = store.(NonBlocking)
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
func (c *Cache[K, V]) Fetch(ctx context.Context, key K, load Loader[K, V]) (Result[V], error) {
	if load == nil {
		return Result[V]{}, errNilLoader
	}
	k := c.Key(key)
	r, st, err := c.read(ctx, k)
	switch st {
	case hit:
		if err != nil {
			c.stats.negativeHits.Add(1)
		} else {
			c.stats.hits.Add(1)
		}
		return r, err
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
		return c.flight(ctx, k, key, load), nil
	})
	select {
	case res := <-ch:
		o := res.Val.(*outcome[V])
		if o.panicked {
			panic(o.panicValue)
		}
		r := o.result
		if !leader {
			r.Source = SourceShared
			c.stats.shared.Add(1)
		}
		return r, o.err
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
	_, err = c.write(ctx, c.Key(key), entry.Value, payload, c.cfg.TTL)
	return err
}

// Delete removes key's entry, value or not-found, so the next call loads.
// A load already in flight may still write its result afterwards.
func (c *Cache[K, V]) Delete(ctx context.Context, key K) error {
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	if err := c.store.Delete(sctx, c.Key(key)); err != nil {
		c.storeError("delete", c.Key(key), err)
		return err
	}
	return nil
}

// outcome is what a flight hands to every caller that waited on it.
type outcome[V any] struct {
	result     Result[V]
	err        error
	panicked   bool
	panicValue any
}

// flight runs one shared load for store key k. It runs in a goroutine of
// singleflight's, so it must not panic: a loader panic is captured into
// the outcome and re-raised by each caller.
func (c *Cache[K, V]) flight(callerCtx context.Context, k string, key K, load Loader[K, V]) *outcome[V] {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(callerCtx), c.cfg.LoadTimeout)
	defer cancel()
	if c.cfg.Lock.Disabled {
		return c.loadAndStore(ctx, k, key, load)
	}
	return c.lockAndLoad(ctx, k, key, load)
}

// loadAndStore calls load and writes its answer back.
func (c *Cache[K, V]) loadAndStore(ctx context.Context, k string, key K, load Loader[K, V]) *outcome[V] {
	c.stats.loads.Add(1)
	v, p, err := callLoader(ctx, key, load)
	if p != nil {
		c.stats.loadErrors.Add(1)
		c.log.Error("readthrough: loader panicked", "key", k, "panic", p.value, "stack", string(p.stack))
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
		o.result.Expires, _ = c.write(ctx, k, entry.Value, payload, c.cfg.TTL)
	case c.isNotFound(err):
		o.err = notFound(err)
		if c.cfg.NegativeTTL > 0 {
			o.result.Expires, _ = c.write(ctx, k, entry.NotFound, nil, c.cfg.NegativeTTL)
		}
	default:
		c.stats.loadErrors.Add(1)
		o.err = err
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

// write stores an entry under k, detached from ctx's cancellation so a
// value whose callers all left is still cached. It returns when the entry
// expires, or the zero time if it was not stored.
func (c *Cache[K, V]) write(ctx context.Context, k string, kind entry.Kind, payload []byte, ttl time.Duration) (time.Time, error) {
	if j := c.cfg.TTLJitter; j > 0 {
		ttl += rand.N(j)
	}
	if g := c.cfg.limits.TTLGranularity; g > 0 {
		ttl = (ttl + g - 1) / g * g
	}
	now := time.Now()
	b := entry.Encode(entry.Entry{Kind: kind, Type: c.typ, WrittenAt: now, FreshUntil: now.Add(ttl), Payload: payload})
	if max := c.cfg.limits.MaxValueSize; max > 0 && len(b) > max {
		c.stats.oversize.Add(1)
		c.logStore("readthrough: entry larger than the store accepts; not cached", "key", k, "size", len(b), "max", max)
		return time.Time{}, fmt.Errorf("readthrough: entry of %d bytes is above the store's limit of %d", len(b), max)
	}
	sctx, cancel := c.detachedStoreCtx(ctx)
	defer cancel()
	if err := c.store.Set(sctx, k, b, ttl); err != nil {
		c.storeError("set", k, err)
		return time.Time{}, err
	}
	return now.Add(ttl), nil
}

// status is what a read of the store found.
type status int

const (
	miss   status = iota // nothing usable: absent, expired, corrupt
	hit                  // a fresh value, or a fresh not-found (err matches ErrNotFound)
	failed               // the store failed or ctx ended: err says which
)

// read looks k up and decodes what it finds. Store errors are counted and
// logged here; callers decide whether to fall back.
func (c *Cache[K, V]) read(ctx context.Context, k string) (Result[V], status, error) {
	sctx, cancel := c.storeCtx(ctx)
	b, ok, err := c.store.Get(sctx, k)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			c.storeError("get", k, err)
		}
		return Result[V]{}, failed, err
	}
	if !ok {
		return Result[V]{}, miss, nil
	}
	e, err := entry.Decode(b)
	if err != nil || e.Type != c.typ {
		c.stats.decodeErrors.Add(1)
		return Result[V]{}, miss, nil
	}
	now := time.Now()
	if !e.Fresh(now) {
		return Result[V]{}, miss, nil
	}
	r := Result[V]{Source: SourceCache, Age: now.Sub(e.WrittenAt), Expires: e.FreshUntil}
	if e.Kind == entry.NotFound {
		return r, hit, ErrNotFound
	}
	r.Value, err = c.cfg.Codec.Unmarshal(e.Payload)
	if err != nil {
		c.stats.decodeErrors.Add(1)
		return Result[V]{}, miss, nil
	}
	return r, hit, nil
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
