package readthrough

import (
	"context"

	"errors"
	"fmt"
	"github.com/readthrough-go/readthrough/internal/entry"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// A flight is one shared pass at a key in this process: reading it (on a
// store that leases on read), taking its lease, waiting on another's, or
// loading. Every caller for the key meanwhile joins it and waits on its own
// context; the flight runs on a goroutine of its own, on a context detached
// from every caller and bounded by LoadTimeout (and Close).
//
// singleflight from golang.org/x/sync is not used here: its DoChan
// re-raises a panic on a goroutine of its own, which crashes the process;
// a flight must be forgotten at LoadTimeout while its goroutine goes on
// (and Close must still wait for it); and a Set or Delete must be able to
// mark a flight superseded, so its result is not written back. All three
// need the flight in hand, so the table is ours.
type flight[V any] struct {
	key     string
	table   *flightTable[V]
	ctx     context.Context // the flight's: LoadTimeout, Close
	cancel  context.CancelFunc
	refresh bool // a background refresh: callers that can be served stale do not join it
	ttl     *ttlBox

	done chan struct{}
	once sync.Once
	out  outcome[V]

	// fallback is the expired value fail-safe may serve, once the flight
	// has found one; SoftLoadTimeout serves it early.
	fallback atomic.Pointer[view[V]]

	// superseded is set by a Set or Delete of the key in this process: the
	// flight's result must not be written back. wmu orders that write with
	// the flight's own.
	superseded atomic.Bool
	wmu        sync.Mutex
}

// outcome is what a flight hands to every caller that waited on it.
type outcome[V any] struct {
	res      Result[V]
	err      error
	how      answer // how each caller is answered: a hit of some kind, or a miss
	fallback bool   // fail-safe served the value after the load failed
	panicked bool
	panicVal any
}

// end publishes the flight's outcome, forgetting the flight first, so a
// call made after a caller got the outcome reads the store afresh instead
// of joining a flight that is over.
func (fl *flight[V]) end(o outcome[V]) {
	fl.table.remove(fl.key, fl)
	fl.publish(o)
}

// publish hands o to every caller, and to later joiners while the flight
// stays in its table (writing its value back).
func (fl *flight[V]) publish(o outcome[V]) {
	fl.once.Do(func() {
		fl.out = o
		close(fl.done)
	})
}

func (fl *flight[V]) published() bool {
	select {
	case <-fl.done:
		return true
	default:
		return false
	}
}

// flightTable maps store keys to the flight in progress for each.
type flightTable[V any] struct {
	mu sync.Mutex
	m  map[string]*flight[V]
}

func (t *flightTable[V]) init() { t.m = make(map[string]*flight[V]) }

// joinable reports whether a call may join fl: not once its context ended
// (LoadTimeout, Close: the next call starts afresh instead of waiting on a
// stuck load), nor once it published an answer that is no longer fresh
// (it stays in the table while its write-back is under way).
func (fl *flight[V]) joinable() bool {
	if fl.ctx.Err() != nil {
		return false
	}
	if fl.published() {
		o := &fl.out
		return !o.panicked && o.err == nil && o.res.Source != SourceStale && time.Now().Before(o.res.Expires)
	}
	return true
}

// join returns the joinable flight for k, or registers the one newFlight
// returns.
func (t *flightTable[V]) join(k string, newFlight func() *flight[V]) (fl *flight[V], created bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if fl := t.m[k]; fl != nil && fl.joinable() {
		return fl, false
	}
	fl = newFlight()
	if fl != nil {
		t.m[k] = fl
	}
	return fl, true
}

func (t *flightTable[V]) get(k string) *flight[V] {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[k]
}

// remove forgets fl, unless another flight has replaced it.
func (t *flightTable[V]) remove(k string, fl *flight[V]) {
	t.mu.Lock()
	if t.m[k] == fl {
		delete(t.m, k)
	}
	t.mu.Unlock()
}

// supersede marks the flight for k, if any, as overtaken by a write of this
// process, and forgets it so later calls read the write instead of joining.
func (t *flightTable[V]) supersede(k string) *flight[V] {
	t.mu.Lock()
	fl := t.m[k]
	delete(t.m, k)
	t.mu.Unlock()
	if fl != nil {
		fl.superseded.Store(true)
	}
	return fl
}

func (t *flightTable[V]) cancelAll() {
	t.mu.Lock()
	for _, fl := range t.m {
		fl.cancel()
	}
	t.mu.Unlock()
}

// flightMode says what a new flight may do with the store.
type flightMode uint8

const (
	modeStore   flightMode = iota // lease, wait, load, write back
	modeNoStore                   // the request met a store failure: load, and touch the store no more
	modeRefresh                   // a background refresh
)

// startFlight joins the key's flight, or starts one. first is what the
// caller read, if it did; deadline is the request's store budget.
// Refreshes have a table of their own: a caller that needs a load does not
// join a refresh, which it could not tell from a hit on a store that leases
// on read; it waits on the refresh's lease instead.
func (c *Cache[K, V]) startFlight(ctx context.Context, k string, key K, load Loader[K, V], first *view[V], mode flightMode, deadline time.Time) (*flight[V], bool) {
	table := &c.flights
	if mode == modeRefresh {
		table = &c.refreshing
	}
	return table.join(k, func() *flight[V] {
		if !c.work.add() {
			return nil
		}
		fl := c.newFlight(ctx, k, table, c.cfg.LoadTimeout)
		fl.refresh = mode == modeRefresh
		go c.flightBody(fl, func() { c.fly(fl, key, load, first, mode, deadline) })
		return fl
	})
}

// newFlight makes a flight for k, with a context detached from the
// caller's (its values kept), ended by timeout or Close.
func (c *Cache[K, V]) newFlight(ctx context.Context, k string, table *flightTable[V], timeout time.Duration) *flight[V] {
	fl := &flight[V]{key: k, table: table, done: make(chan struct{}), ttl: &ttlBox{}}
	parent := context.WithValue(context.WithoutCancel(ctx), ttlKey{}, fl.ttl)
	fl.ctx, fl.cancel = context.WithTimeout(parent, timeout)
	stop := context.AfterFunc(c.closeCtx, fl.cancel)
	cancel := fl.cancel
	fl.cancel = func() { stop(); cancel() }
	return fl
}

// flightBody runs a flight's work on a goroutine the tracker counted: no
// panic may escape it (one in a store call, the codec or IsNotFound goes to
// the callers), and the flight is forgotten and its context released when
// it is done.
func (c *Cache[K, V]) flightBody(fl *flight[V], work func()) {
	defer c.work.done()
	defer fl.cancel()
	defer fl.table.remove(fl.key, fl)
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("readthrough: panic in a flight", "key", fl.key, "err", fmt.Errorf("panic: %v", p), "stack", string(debug.Stack()))
			fl.end(outcome[V]{panicked: true, panicVal: p})
		}
	}()
	work()
}

// flightFor joins or starts the key's flight and waits for it. A call
// that found nothing servable is a miss; on a store that leases on read,
// the flight itself reads, and counts a miss only where it finds one.
func (c *Cache[K, V]) flightFor(ctx context.Context, k string, key K, load Loader[K, V], first *view[V], mode flightMode, deadline time.Time) (Result[V], error) {
	if first != nil && first.st == sOurs && first.m.kind == entry.Lease {
		first.echoes = 1 // the read wrote this lease: its echo is to come
	}
	fl, leader := c.startFlight(ctx, k, key, load, first, mode, deadline)
	if fl == nil {
		if first != nil && first.st == sOurs {
			c.release(nil, heldOf(k, first, 0)) // leased on read, then the cache closed
		}
		return Result[V]{}, ErrClosed
	}
	if !leader && first != nil && first.st == sOurs {
		// We leased the key on read, but a flight of this process started
		// meanwhile (it may be waiting on our lease): give the lease back
		// and share that flight.
		h := heldOf(k, first, 0)
		if !c.spawn("a lease's release", func() { c.release(nil, h) }) {
			c.release(nil, h)
		}
	}
	return c.await(ctx, fl, leader, time.Time{})
}

// await waits for fl on the caller's ctx, and at most until the flight's
// own context ends (LoadTimeout or Close), whatever the flight's goroutine
// is stuck in. softAt is when SoftLoadTimeout lets the caller go with
// fail-safe's value: zero for SoftLoadTimeout from now (a batch passes one
// deadline for all its keys).
func (c *Cache[K, V]) await(ctx context.Context, fl *flight[V], leader bool, softAt time.Time) (Result[V], error) {
	var soft <-chan time.Time
	if c.cfg.SoftLoadTimeout > 0 {
		if softAt.IsZero() {
			softAt = time.Now().Add(c.cfg.SoftLoadTimeout)
		}
		t := time.NewTimer(time.Until(softAt))
		defer t.Stop()
		soft = t.C
	}
	for {
		select {
		case <-fl.done:
			return c.outcomeFor(fl, leader)
		case <-ctx.Done():
			c.count(fl.key, ansMiss, 0, false, false)
			return Result[V]{}, ctx.Err()
		case <-fl.ctx.Done():
			if fl.published() {
				return c.outcomeFor(fl, leader)
			}
			if c.closeCtx.Err() != nil {
				return Result[V]{}, ErrClosed
			}
			if fb := c.stillCovers(fl.fallback.Load(), time.Now()); fb != nil {
				c.count(fl.key, ansMiss, SourceStale, false, true)
				return fb.result(SourceStale, time.Now()), nil
			}
			c.count(fl.key, ansMiss, 0, false, false)
			return Result[V]{}, c.timeoutErr(fl.key)
		case <-soft:
			soft = nil
			if fb := c.stillCovers(fl.fallback.Load(), time.Now()); fb != nil {
				// The load goes on and caches its result when it lands.
				c.count(fl.key, ansStale, SourceStale, false, false)
				return fb.result(SourceStale, time.Now()), nil
			}
		}
	}
}

func (c *Cache[K, V]) timeoutErr(k string) error {
	return fmt.Errorf("readthrough: load of %q did not finish within LoadTimeout (%v): %w", k, c.cfg.LoadTimeout, context.DeadlineExceeded)
}

// outcomeFor turns a published outcome into this caller's result, raising
// a panic in the caller's own goroutine.
func (c *Cache[K, V]) outcomeFor(fl *flight[V], leader bool) (Result[V], error) {
	o := &fl.out
	if o.panicked {
		c.count(fl.key, ansMiss, 0, false, false)
		panic(o.panicVal)
	}
	r := o.res
	if !leader && o.how == ansMiss && r.Source != SourceStale {
		r.Source = SourceShared
		c.stats.shared.Add(1)
	}
	c.count(fl.key, o.how, r.Source, false, o.fallback)
	return r, o.err
}

// fly runs a flight to its outcome, then (on a store that blocks) writes
// the result back after publishing it, so callers never wait for the
// write.
func (c *Cache[K, V]) fly(fl *flight[V], key K, load Loader[K, V], first *view[V], mode flightMode, deadline time.Time) {
	if mode == modeRefresh {
		defer c.refresh.Release(1)
	}
	if mode == modeNoStore {
		fl.end(c.loadOnly(fl, key, load, nil))
		return
	}
	a := c.acquire(fl, key, first, mode == modeRefresh, deadline)
	switch a.kind {
	case acqServe:
		fl.end(outcome[V]{res: a.res, err: a.err, how: a.how})
		if a.refresh {
			c.refreshAsync(fl.ctx, fl.key, key, load, a.seen)
		}
	case acqSkip:
		c.stats.refreshSkips.Add(1)
		fl.end(outcome[V]{err: errRefreshSkipped})
	case acqLeased:
		c.loadLeased(fl, key, load, a.lease, a.fallback, mode == modeRefresh)
	case acqUnleased:
		c.loadLeased(fl, key, load, nil, a.fallback, mode == modeRefresh) // Lock.Disabled: no lease, unfenced write
	case acqNoStore:
		fl.end(c.loadOnly(fl, key, load, a.fallback))
	case acqFail:
		fl.end(c.failed(fl, a.fallback, a.err))
	}
}

var errRefreshSkipped = errors.New("readthrough: refresh skipped")

// failed is the outcome of a flight that could not load: fail-safe's
// fallback when there is one, else err.
func (c *Cache[K, V]) failed(fl *flight[V], fb *view[V], err error) outcome[V] {
	if fb = c.stillCovers(fb, time.Now()); fb != nil {
		return outcome[V]{res: fb.result(SourceStale, time.Now()), fallback: true}
	}
	if c.closeCtx.Err() != nil {
		return outcome[V]{err: ErrClosed}
	}
	if errors.Is(err, context.DeadlineExceeded) && fl.ctx.Err() != nil {
		return outcome[V]{err: c.timeoutErr(fl.key)}
	}
	return outcome[V]{err: err}
}

// loaded is what a loader call came to.
type loaded[V any] struct {
	v        V
	err      error
	took     time.Duration
	start    time.Time // when the loader was called: a value's age counts from then, so it is never older than its TTL, however long the load
	panicked bool
	panicVal any
	stack    []byte
	exited   bool // runtime.Goexit
}

// callLoader runs load on a goroutine of its own, so a loader that ignores
// its context cannot hold the flight past LoadTimeout. It recovers a panic
// and notices runtime.Goexit; the goroutine is tracked, so Close waits for
// the loader to return.
func (c *Cache[K, V]) callLoader(fl *flight[V], key K, load Loader[K, V]) <-chan loaded[V] {
	ch := make(chan loaded[V], 1)
	if !c.work.add() {
		ch <- loaded[V]{err: ErrClosed}
		return ch
	}
	c.stats.loads.Add(1)
	go func() {
		defer c.work.done()
		var r loaded[V]
		returned := false
		start := time.Now()
		defer func() {
			r.start = start
			r.took = time.Since(start)
			if !returned {
				if p := recover(); p != nil {
					r.panicked, r.panicVal, r.stack = true, p, debug.Stack()
				} else {
					r.exited = true // runtime.Goexit: no panic, no return
				}
			}
			ch <- r
		}()
		r.v, r.err = load(fl.ctx, key)
		returned = true
	}()
	return ch
}

// loadOnly loads with no lease and writes nothing back: the request met a
// store failure, or waited on a live lease past Lock.MaxWait.
func (c *Cache[K, V]) loadOnly(fl *flight[V], key K, load Loader[K, V], fb *view[V]) outcome[V] {
	var r loaded[V]
	select {
	case r = <-c.callLoader(fl, key, load):
	case <-fl.ctx.Done():
		c.loadDone(fl.key, r, "timeout")
		return c.failed(fl, fb, fl.ctx.Err())
	}
	o, _, _ := c.judge(fl, r, fb, true)
	return o
}

// judge turns a loader's return into the flight's outcome, and says what
// to write back: an entry kind and payload, or nothing (kind 0). record
// says whether this is a load of its own (a key of a batch is not: the
// batch reports its one load).
func (c *Cache[K, V]) judge(fl *flight[V], r loaded[V], fb *view[V], record bool) (outcome[V], entryKind, []byte) {
	now := time.Now()
	fb = c.stillCovers(fb, now) // the load may have outlasted fail-safe's window
	loadDone := func(how string) {
		if record {
			c.loadDone(fl.key, r, how)
		}
	}
	switch {
	case r.panicked:
		loadDone("panic")
		if record {
			c.log.Error("readthrough: loader panicked", "key", fl.key, "err", fmt.Errorf("panic: %v", r.panicVal), "stack", string(r.stack))
		}
		if fb != nil {
			return outcome[V]{res: fb.result(SourceStale, now), fallback: true}, kindRearm, nil
		}
		return outcome[V]{panicked: true, panicVal: r.panicVal}, 0, nil
	case r.exited:
		loadDone("exit")
		if fb != nil {
			return outcome[V]{res: fb.result(SourceStale, now), fallback: true}, kindRearm, nil
		}
		return outcome[V]{err: ErrLoaderExited}, 0, nil
	case r.err == nil:
		loadDone("ok")
		c.loadEWMA.add(r.took)
		o := outcome[V]{res: Result[V]{Value: r.v, Source: SourceLoader}}
		payload, err := c.cfg.Codec.Marshal(r.v)
		if err != nil {
			c.stats.encodeErrors.Add(1)
			c.log.Error("readthrough: encode failed; value not cached", "key", fl.key, "op", "encode", "err", err)
			return o, 0, nil
		}
		return o, kindValue, payload
	case c.isNotFound(r.err):
		loadDone("not-found")
		return outcome[V]{res: Result[V]{Source: SourceLoader}, err: c.notFound}, kindNotFound, nil
	default:
		loadDone("error")
		if fb != nil {
			return outcome[V]{res: fb.result(SourceStale, now), fallback: true}, kindRearm, nil
		}
		return outcome[V]{res: Result[V]{Source: SourceLoader}, err: r.err}, 0, nil
	}
}

// entryKind is what a flight writes back after its load.
type entryKind uint8

const (
	kindValue entryKind = iota + 1
	kindNotFound
	kindRearm // fail-safe: the fallback, re-armed
)

func (c *Cache[K, V]) loadDone(k string, r loaded[V], how string) {
	if how != "ok" && how != "not-found" {
		c.stats.loadErrors.Add(1)
	}
	if c.rec != nil {
		var err error
		if how == "error" {
			err = r.err
		}
		c.record(Event{Kind: EventLoad, Key: k, Outcome: how, Duration: r.took, Err: err})
	}
}

// ttlKey carries a load's ttlBox in its context, for SetTTL.
type ttlKey struct{}

type ttlBox struct{ ttl atomic.Int64 }
