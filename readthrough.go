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
//		Near:        readthrough.NearOptions{MaxEntries: 10_000},
//	})
//	p, err := products.GetOrLoad(ctx, 42, repo.Get) // reads "product:42"
//
// # One load per key
//
// Concurrent misses for one key in one process share a single flight.
// Processes that share a store share it too: a miss takes the key's lease
// (an entry in the key itself), loads, and writes the value back only if
// the lease is still there; the others wait for the value to land, woken
// by the store when it can notify ([SourceLockWait]). The holder keeps its
// lease alive while it loads, so a load of any length up to
// [Options].LoadTimeout runs once; a holder that dies frees the key within
// [LockOptions].TTL.
//
// # Invalidation sticks
//
// A [Cache.Set] or [Cache.Delete] made while a load is in flight wins, in
// this process and, with a store that can compare-and-swap, in every
// other: the load's callers get their value, but the load never
// overwrites the newer state. The same holds for a writer that is not a
// Cache at all (a script's raw SET or DEL of the key), and for a holder
// whose lease was lost.
//
// # The states of a key
//
//	absent ──lease──▶ leased ──write back──▶ value ──TTL──▶ stale ──windows──▶ absent
//	   ▲                │  │                    │ ▲            │
//	   │  release/expiry│  └─▶ not-found        │ └─ refresh ──┘ (its lock beside the key)
//	   └────────────────┘     (NegativeTTL)     └─ Set, Delete, any writer: replaces or removes, always wins
//
// A key holds nothing, a lease, a value (fresh, then stale within the
// writer's windows), or a not-found. Anyone may take the lease of an
// absent key (set-if-absent) or of bytes no one will serve (compare-and-
// swap from exactly the bytes it read; a lease taken over an expired value
// is embedded in it, so readers with longer stale windows keep it); only
// the lease's holder may write its load back or keep the lease alive, and
// only while the key still holds exactly its lease (compare-and-swap);
// anyone may Set or Delete, which ends any lease. A background refresh of
// a servable value takes a lock beside the key instead (a key of its own,
// set-if-absent), so the value and every process's near copy of it stay
// until the new value lands, written only while the key still holds
// exactly the value the refresh read. A holder that fails releases its
// lease (compare-and-delete), or with fail-safe re-arms the stale value
// it leased. What each Cache serves of a stale value follows its own
// options, never the writer's.
//
// # Not found
//
// A loader error matching [ErrNotFound] (or one that
// [Options].IsNotFound accepts) is cached for [Options].NegativeTTL, so
// missing IDs do not hammer the upstream. Every not-found, loaded or
// cached, in any process, is returned as the same error: one matching
// ErrNotFound and [Options].NotFoundError. Other loader errors reach every
// caller that shared the load and are never cached.
//
// # Cancellation, timeouts and panics
//
// Each caller waits on its own context and returns ctx.Err() when it
// ends. The shared load runs on a context detached from the callers
// (keeping their values, losing their cancellation) and bounded by
// LoadTimeout, at which every caller returns even if the loader ignores
// its context. A panic anywhere in a flight (the loader, the codec,
// IsNotFound, a store call) is re-raised in the goroutine of every caller
// that waited on it, with the original value; a loader that calls
// runtime.Goexit gives them [ErrLoaderExited]. Nothing ever panics in a
// goroutine of the cache's.
//
// # Failure
//
// The store is an optimisation, never a dependency: a store error, or a
// store slower than [Options].StoreTimeout, is counted in [Stats] and the
// loader serves the call; the request touches the store no more, so a hung
// store costs it one StoreTimeout. Bytes that do not decode as a whole
// entry of this Cache's value type are a miss, and the next load
// overwrites them.
//
// # Near cache
//
// With [Options].Near, decoded values are kept in process memory and
// repeat hits are answered from it ([SourceNear]): no store call, no
// decode. A copy never outlives its entry's freshness, and is evicted the
// moment any writer changes the key when the store can tell (see
// [NearOptions]).
//
// # A slow or failing upstream
//
// Opt-in options keep callers fast and served: [Options].StaleWhileRevalidate
// serves an expired value while one background refresh replaces it;
// [Options].EarlyRefresh refreshes hot keys before they expire (XFetch);
// [Options].FailSafe serves the last good value when a reload fails;
// [Options].SoftLoadTimeout stops waiting for a slow load when fail-safe
// has a value at hand; [Options].Breaker stops calling a failing store for
// a while.
//
// # Close
//
// [Cache.Close] cancels everything the cache started (loads, refreshes,
// write-backs) and waits for it; every call after it returns [ErrClosed].
//
// Stores implement [Store]; the optional capabilities a store may add
// (compare-and-swap, notifications, batches) are in package store.
package readthrough

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/readthrough-go/readthrough/internal/breaker"
	"github.com/readthrough-go/readthrough/internal/entry"
	"golang.org/x/sync/semaphore"
)

// Errors callers may test for with errors.Is.
var (
	// ErrNotFound is what a loader returns, wrapped or not, when the
	// upstream has nothing for a key; callers get an error matching it,
	// from the loader or from a cached not-found.
	ErrNotFound = errors.New("readthrough: not found")

	// ErrInvalidOptions is wrapped by every error [New] returns for
	// options it cannot accept.
	ErrInvalidOptions = errors.New("readthrough: invalid options")

	// ErrNilLoader is returned for a call with a nil loader.
	ErrNilLoader = errors.New("readthrough: nil loader")

	// ErrClosed is returned by every call on a closed Cache.
	ErrClosed = errors.New("readthrough: cache closed")

	// ErrLoaderExited is returned to the callers of a load whose loader
	// called runtime.Goexit (t.FailNow in a test fake, say) instead of
	// returning.
	ErrLoaderExited = errors.New("readthrough: loader called runtime.Goexit")

	// ErrBreakerOpen is returned by [Cache.Set] and [Cache.Delete] while
	// the store circuit breaker is open: the store was skipped.
	ErrBreakerOpen = errors.New("readthrough: store skipped: circuit breaker open")
)

// Loader loads the value for key from the upstream. It runs on a context
// detached from the callers that wait on it, bounded by
// [Options].LoadTimeout. To cache its answer for a TTL of its own choosing
// (an HTTP max-age, say), it calls [SetTTL] with that context.
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
	// SourceLockWait: this call waited on another process's lease, then
	// read that process's result from the store.
	SourceLockWait
	// SourceStale: an expired value, served by stale-while-revalidate,
	// by fail-safe after a failed load (or re-armed by one), or after
	// SoftLoadTimeout.
	SourceStale
	// SourceNear: answered from the in-process copy, no store call.
	SourceNear
)

// String names the source: "cache", "loader", "shared", "lock-wait",
// "stale" or "near", as a log field or an x-cache header would show it.
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
	case SourceNear:
		return "near"
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
	// Expires is when the value stops being fresh: after it a call
	// reloads it (or, with the options for a slow upstream, may serve it
	// stale meanwhile). A stale result's is in the past, so
	// time.Until(r.Expires) is a max-age a downstream cache can use
	// as it is. Zero when nothing was cached (an uncached error).
	Expires time.Time
}

// Cache is a read-through cache of V values keyed by K over a [Store].
// It is safe for concurrent use; create it with [New].
type Cache[K comparable, V any] struct {
	st   Store
	caps capabilities
	cfg  config[K, V]
	ns   string
	typ  uint32 // fingerprint of V in entry headers
	log  *slog.Logger
	rec  Recorder // the user's; Stats are counted whatever it is

	// notFound is the one error every not-found is returned as.
	notFound error

	flights    flightTable[V] // loads (and, on a store that leases on read, reads)
	refreshing flightTable[V] // background refreshes
	near       *near[K, V]    // nil when Options.Near is off
	link       link
	epoch      time.Time // with its monotonic reading: near hits read only that clock
	nearQuiet  bool      // no EarlyRefresh: a fresh near hit only counts (and records)
	stats      counters
	breaker    *breaker.Breaker // nil when Options.Breaker is off
	refresh    *semaphore.Weighted
	loadEWMA   ewma // recent load durations, for XFetch on values written by Set

	lastStoreLog, lastTypeLog logLimiter
	rand                      func() float64 // for XFetch and jitter; replaced by tests

	work        tracker       // every goroutine the cache starts
	closed      chan struct{} // closed when Close has finished
	guards      tracker       // store calls it abandoned at their deadline
	closeCtx    context.Context
	closeCancel context.CancelFunc
	stopNotify  func()
}

// New returns a Cache over st. A nil opts means every default. It fails,
// with an error matching [ErrInvalidOptions], on a nil store, a negative
// duration, options that conflict or would do nothing, a TTL above the
// store's limits, a key type with no default key function and no
// [Options].KeyFunc, or a value type the default codec can never encode.
func New[K comparable, V any](st Store, opts *Options[K, V]) (*Cache[K, V], error) {
	cfg, err := newConfig(st, opts)
	if err != nil {
		return nil, err
	}
	c := &Cache[K, V]{
		st:       st,
		cfg:      *cfg,
		ns:       cfg.Namespace,
		typ:      entry.TypeOf[V](),
		rec:      cfg.Recorder,
		rand:     rand.Float64,
		notFound: notFoundAs(cfg.NotFoundError),
		refresh:  semaphore.NewWeighted(int64(cfg.MaxRefreshes)),
		closed:   make(chan struct{}),
	}
	c.caps.find(st)
	c.epoch = time.Now()
	c.log = cfg.Logger.With("namespace", c.ns)
	c.flights.init()
	c.refreshing.init()
	c.closeCtx, c.closeCancel = context.WithCancel(context.Background())
	if cfg.Breaker.Failures > 0 {
		c.breaker = breaker.New(cfg.Breaker.Failures, cfg.Breaker.CoolDown, c.breakerChanged)
	}
	if cfg.Near.MaxEntries > 0 {
		c.near = newNear[K, V](cfg.Near.MaxEntries, c.nearEvicted)
		c.nearQuiet = cfg.EarlyRefresh == 0
	}
	c.listen()
	return c, nil
}

// Key returns the store key for key: the namespace, a colon, then the
// derived key (hashed when longer than [MaxKeyLen]). Use it in logs, or to
// let another writer address the same entries.
func (c *Cache[K, V]) Key(key K) string {
	return storeKey(c.cfg.Namespace, c.cfg.KeyFunc(key))
}

// GetOrLoad returns the value for key from the cache, or from load on a
// miss, caching what load returns. See [Cache.Fetch].
func (c *Cache[K, V]) GetOrLoad(ctx context.Context, key K, load Loader[K, V]) (V, error) {
	r, err := c.Fetch(ctx, key, load)
	return r.Value, err
}

// Fetch is [Cache.GetOrLoad] with the [Result]'s provenance.
//
// On a hit it returns the cached value, or for a cached not-found an
// error matching [ErrNotFound]. On a miss, the first caller for the key
// in this process starts a flight: it takes the key's lease (unless
// disabled), calls load, and writes the answer back. Every caller for the
// key meanwhile waits for that flight, each on its own ctx, and at most
// until LoadTimeout. A loader error is returned to all of them; a
// not-found becomes the Cache's one not-found error (see
// [Options].NotFoundError).
//
// If anything in the flight panics, Fetch panics with the same value in
// every waiting caller's goroutine.
//
// With the options for a slow or failing upstream, an expired value may be
// returned instead ([SourceStale]): at once while it is refreshed in the
// background (StaleWhileRevalidate), in place of a failed load (FailSafe),
// or when the load outlasts SoftLoadTimeout.
func (c *Cache[K, V]) Fetch(ctx context.Context, key K, load Loader[K, V]) (Result[V], error) {
	if load == nil {
		return Result[V]{}, ErrNilLoader
	}
	if c.work.isClosed() {
		return Result[V]{}, ErrClosed
	}
	if c.near != nil {
		if e, ok := c.near.get(key); ok {
			el := time.Since(c.epoch)
			if c.nearQuiet && el < e.freshMono && e.m.kind == entry.Value && c.link.covers(e.gen) {
				// The hot path: a fresh copy, told of every change, and
				// nothing to do but count it.
				c.stats.nearFresh.Add(1)
				if c.rec != nil {
					c.record(Event{Kind: EventHit, Key: e.skey, Source: SourceNear})
				}
				return Result[V]{Value: e.value, Source: SourceNear, Age: e.ageMono + el, Expires: e.m.freshUntil}, nil
			}
			if r, err, ok := c.nearServe(ctx, key, load, e, el); ok {
				return r, err
			}
		}
	}
	return c.fetch(ctx, c.Key(key), key, load)
}

// Peek returns what the cache holds for key without ever calling a loader
// or taking a lease: the value with its provenance ([SourceNear],
// [SourceCache], or [SourceStale] within this Cache's stale windows), or
// for a cached not-found the Cache's not-found error. ok is false when the
// cache holds nothing it would serve (a miss, a lease, an entry past its
// windows). A store failure is returned as the error.
func (c *Cache[K, V]) Peek(ctx context.Context, key K) (r Result[V], ok bool, err error) {
	if c.work.isClosed() {
		return Result[V]{}, false, ErrClosed
	}
	return c.peek(ctx, key)
}

// Set stores value under key with the configured TTL, replacing what is
// there. Use it to write through after an update. It wins over any load
// of key in flight, in this process and (with a store that can
// compare-and-swap) in every other: the load's result is not cached. It
// evicts this process's near copy at once, and every other process's as
// soon as the store tells it. Unlike reads, it returns the store's error.
func (c *Cache[K, V]) Set(ctx context.Context, key K, value V) error {
	if c.work.isClosed() {
		return ErrClosed
	}
	payload, err := c.cfg.Codec.Marshal(value)
	if err != nil {
		return fmt.Errorf("readthrough: encode: %w", err)
	}
	return c.set(ctx, c.Key(key), payload)
}

// Delete removes key's entry, value or not-found, so the next call loads.
// A load already in flight when Delete is called does not cache its
// result afterwards (in other processes too, with a store that can
// compare-and-swap); its callers still get it.
func (c *Cache[K, V]) Delete(ctx context.Context, key K) error {
	if c.work.isClosed() {
		return ErrClosed
	}
	return c.del(ctx, c.Key(key))
}

// Close the Cache before the process exits: on a remote store a loaded
// value is written back after its callers have it, and a process that
// exits without Close loses that write (and leaves the key's lease for
// Lock.TTL).
//
// Close cancels the context of everything the cache started (loads,
// refreshes, lease keep-alives, waits on other processes' leases) and waits
// for each to return; a loader that ignores its context holds Close until
// it returns. Writes already under way (a value loaded, written back after
// its callers got it; a lease released) are not cancelled, since they
// carry finished work: Close waits for them, each bounded by StoreTimeout,
// and for any store call the cache abandoned at its deadline. It then
// stops the store's notifications to this Cache. Every call after Close
// returns [ErrClosed]. It never fails; the error is for io.Closer.
func (c *Cache[K, V]) Close() error {
	if !c.work.close() {
		<-c.closed // another Close is at work: return when it does
		return nil
	}
	defer close(c.closed)
	c.closeCancel()
	c.flights.cancelAll()
	c.refreshing.cancelAll()
	c.work.wait()
	c.guards.close()
	c.guards.wait()
	if c.stopNotify != nil {
		c.stopNotify()
	}
	return nil
}

// SetTTL, called by a loader with the context it was given, sets the TTL
// of the value it is about to return, in place of [Options].TTL: say, an
// HTTP response's max-age, or a row's own expiry. The TTL is clamped to
// the store's longest TTL, and ignored if not positive. Jitter, stale
// windows and not-found answers are unaffected. It reports whether ctx is
// a load's context. For a [BatchLoader], it sets the TTL of every value of
// that call.
func SetTTL(ctx context.Context, ttl time.Duration) bool {
	box, ok := ctx.Value(ttlKey{}).(*ttlBox)
	if !ok {
		return false
	}
	if ttl > 0 {
		box.ttl.Store(int64(ttl))
	}
	return true
}
