package readthrough

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/readthrough-go/readthrough/internal/entry"
	"github.com/readthrough-go/readthrough/store"
)

// BatchLoader loads the values for keys from the upstream in one call (a
// WHERE id IN (...)). It returns the values it found; a key it leaves out
// of the map is not found. Keys in the map that were not asked for are
// ignored. Like a [Loader], it runs on a context detached from the
// callers, bounded by LoadTimeout, and may call [SetTTL].
type BatchLoader[K comparable, V any] func(ctx context.Context, keys []K) (map[K]V, error)

// Outcome is one key's answer in a batch: its [Result], and its error
// (nil, the Cache's not-found error, or its load's error).
type Outcome[V any] struct {
	Result[V]
	Err error
}

// GetOrLoadMany returns the values for keys: those the cache holds, and,
// from one call of load with exactly the keys it does not hold (each once),
// the rest, which it caches. Keys that are not found (left out by load, or
// a cached not-found) are absent from the map; with NegativeTTL they are
// cached and not passed to load again while they are.
//
// It joins loads in flight in this process (single GetOrLoad calls and
// other batches) and, through leases, in others: each key loads once. On a
// store with batches (store.Batcher) it costs a few round trips whatever
// the number of keys: one to read (and lease the missing keys, on Redis),
// one to write back.
//
// If load fails, the error is returned with the map of every key that did
// get a value (from the cache, or another flight): nothing is cached for
// the keys it failed, and fail-safe serves them where it can. If load
// panics, GetOrLoadMany panics with the same value. See [Cache.FetchMany]
// for each key's own outcome.
func (c *Cache[K, V]) GetOrLoadMany(ctx context.Context, keys []K, load BatchLoader[K, V]) (map[K]V, error) {
	outs, err := c.FetchMany(ctx, keys, load)
	m := make(map[K]V, len(outs))
	var first error
	for _, k := range keys {
		o, ok := outs[k]
		switch {
		case !ok:
		case o.Err == nil:
			m[k] = o.Value
		case errors.Is(o.Err, ErrNotFound):
		case first == nil:
			first = o.Err
		}
	}
	if err != nil {
		return m, err
	}
	return m, first
}

// FetchMany is [Cache.GetOrLoadMany] with each key's [Outcome]: where its
// value came from, or why it has none. Every key asked for has an entry,
// unless ctx ends first: FetchMany then returns the keys answered so far
// with ctx.Err(). Its error is otherwise nil, ErrNilLoader or ErrClosed; a
// load's error is in the keys' outcomes.
func (c *Cache[K, V]) FetchMany(ctx context.Context, keys []K, load BatchLoader[K, V]) (map[K]Outcome[V], error) {
	if load == nil {
		return nil, ErrNilLoader
	}
	if c.work.isClosed() {
		return nil, ErrClosed
	}
	out := make(map[K]Outcome[V], len(keys))
	single := singleOf(load) // for refreshes, and keys that wait on another's lease
	var softAt time.Time     // one SoftLoadTimeout for the whole batch
	if c.cfg.SoftLoadTimeout > 0 {
		softAt = time.Now().Add(c.cfg.SoftLoadTimeout)
	}
	// First everything that may panic (KeyFunc, a Recorder on near hits),
	// before any flight is registered: a panic then leaves none behind.
	type want struct {
		key K
		k   string
	}
	wants := make([]want, 0, len(keys))
	seen := make(map[K]bool, len(keys))
	for _, key := range keys {
		if seen[key] {
			continue
		}
		seen[key] = true
		if c.near != nil {
			if r, err, ok := c.nearGet(ctx, key, single); ok {
				out[key] = Outcome[V]{r, err}
				continue
			}
		}
		wants = append(wants, want{key, c.Key(key)})
	}
	type wait struct {
		key    K
		fl     *flight[V]
		leader bool
	}
	waits := make([]wait, 0, len(wants))
	var members []*member[K, V]
	var shared *flight[V] // the context the flights this call starts share
	for _, w := range wants {
		fl, created := c.flights.join(w.k, func() *flight[V] {
			if shared == nil {
				shared = c.newFlight(ctx, "", nil, c.cfg.LoadTimeout)
			}
			// The batch owns the shared context: a member's own cancel does nothing.
			fl := &flight[V]{key: w.k, table: &c.flights, done: make(chan struct{}), ctx: shared.ctx, cancel: func() {}, ttl: shared.ttl}
			members = append(members, &member[K, V]{key: w.key, fl: fl})
			return fl
		})
		waits = append(waits, wait{w.key, fl, created})
	}
	if len(members) > 0 {
		if c.work.add() {
			go c.runBatch(shared, members, load, single)
		} else {
			for _, m := range members {
				m.fl.end(outcome[V]{err: ErrClosed})
			}
			shared.cancel()
		}
	}
	for _, w := range waits {
		r, err := c.await(ctx, w.fl, w.leader, softAt)
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return out, ctx.Err()
		}
		out[w.key] = Outcome[V]{r, err}
	}
	return out, nil
}

// singleOf makes a Loader of a BatchLoader, for one key at a time.
func singleOf[K comparable, V any](load BatchLoader[K, V]) Loader[K, V] {
	return func(ctx context.Context, key K) (V, error) {
		m, err := load(ctx, []K{key})
		if err != nil {
			var zero V
			return zero, err
		}
		v, ok := m[key]
		if !ok {
			return v, ErrNotFound
		}
		return v, nil
	}
}

// member is one key of a batch, with its own flight (so single calls for
// the key join it) and what the batch learned of it.
type member[K comparable, V any] struct {
	key     K
	fl      *flight[V]
	v       view[V]
	lease   *held
	fb      *view[V]
	token   []byte
	state   memberState
	started bool // mSingle: its own flight goroutine runs it
}

type memberState uint8

const (
	mRead    memberState = iota // read, to be leased
	mDone                       // answered
	mLeased                     // holds its lease: in the batch load
	mLoad                       // in the batch load, no lease: Lock.Disabled
	mNoStore                    // in the batch load, writing nothing: the store failed
	mSingle                     // goes on alone, as a single flight: it waits on another's lease
)

// runBatch is the goroutine of one batch: it reads every member's key,
// answers what it can, leases the rest, loads them with one call and
// writes the answers back: a few round trips for the whole batch.
func (c *Cache[K, V]) runBatch(shared *flight[V], members []*member[K, V], load BatchLoader[K, V], single Loader[K, V]) {
	defer c.work.done()
	defer shared.cancel()
	defer func() {
		p := recover()
		if p != nil {
			c.log.Error("readthrough: panic in a batch", "err", fmt.Errorf("panic: %v", p), "stack", string(debug.Stack()))
		}
		for _, m := range members {
			if m.state == mSingle && m.started {
				continue // its own goroutine ends it
			}
			if p != nil && !m.fl.published() {
				if m.lease != nil {
					c.release(m.fl, m.lease)
				}
				m.fl.end(outcome[V]{panicked: true, panicVal: p})
			}
			m.fl.table.remove(m.fl.key, m.fl)
		}
	}()
	ctx, deadline := shared.ctx, c.budget()
	c.batchRead(ctx, members, deadline, single)
	c.batchLease(ctx, members, deadline)
	var loading []*member[K, V]
	for _, m := range members {
		switch m.state {
		case mSingle:
			if c.work.add() {
				m.started = true
				go c.flightBody(m.fl, func() { c.fly(m.fl, m.key, single, nil, modeStore, c.budget()) })
			} else {
				m.fl.end(outcome[V]{err: ErrClosed})
				m.state = mDone
			}
		case mLeased, mLoad, mNoStore:
			loading = append(loading, m)
		}
	}
	if len(loading) > 0 {
		c.batchLoad(shared, loading, load)
	}
	for _, m := range members {
		if m.state == mSingle && m.started {
			<-m.fl.done // they share the batch's context: keep it until they are done
		}
	}
}

// batchRead reads every member's key: one round trip on a store with
// batches (and on a store that leases on read, missing keys come back
// leased).
func (c *Cache[K, V]) batchRead(ctx context.Context, members []*member[K, V], deadline time.Time, single Loader[K, V]) {
	if !c.caps.hasBatch() {
		for _, m := range members {
			snap := c.link.snapshot(m.fl.key)
			raw, ok, err := c.get(ctx, m.fl.key, deadline)
			if err != nil {
				c.memberFailed(ctx, m, err)
				continue
			}
			m.v = c.look(m.fl.key, raw, ok, time.Now(), nil)
			m.v.snap = snap
			c.decide(m, single)
		}
		return
	}
	ops := make([]store.Op, len(members))
	snaps := make([]snap, len(members))
	leaseOnRead := c.caps.hasGOS() && !c.cfg.Lock.Disabled
	now := time.Now()
	for i, m := range members {
		snaps[i] = c.link.snapshot(m.fl.key)
		ops[i] = store.Op{Kind: store.OpGet, Key: m.fl.key}
		if leaseOnRead {
			m.token = newToken()
			ops[i] = store.Op{Kind: store.OpGetOrSet, Key: m.fl.key, Value: c.leaseEntry(m.token, now), TTL: c.cfg.Lock.TTL}
		}
	}
	if err := c.batch(ctx, ops, deadline); err != nil {
		if err == errUnsupported {
			c.batchRead(ctx, members, deadline, single)
			return
		}
		for _, m := range members {
			c.memberFailed(ctx, m, err)
		}
		return
	}
	var again []*member[K, V]
	for i, m := range members {
		switch op := &ops[i]; {
		case op.Kind == store.OpGetOrSet && errors.Is(op.Err, errors.ErrUnsupported):
			// A wrapper over a store that cannot GetOrSet: read with Get.
			c.caps.noGOS.Store(true)
			again = append(again, m)
		case op.Err != nil:
			c.memberFailed(ctx, m, op.Err)
		case op.Kind == store.OpGetOrSet && op.OK:
			m.lease, m.state = &held{key: m.fl.key, token: m.token, bytes: op.Value}, mLeased
		default:
			m.v = c.look(m.fl.key, op.Result, op.Kind == store.OpGetOrSet || op.OK, time.Now(), m.token)
			m.v.snap = snaps[i]
			c.decide(m, single)
		}
	}
	if len(again) > 0 {
		c.batchRead(ctx, again, deadline, single)
	}
}

// decide answers a member from what its read found, or says what it needs.
func (c *Cache[K, V]) decide(m *member[K, V], single Loader[K, V]) {
	now := time.Now()
	if m.fb = c.fallbackOf(&m.v, now); m.fb != nil {
		m.fl.fallback.Store(m.fb)
	}
	switch st := m.v.st; {
	case st.servable():
		c.nearPut(m.key, m.fl.key, &m.v)
		o := outcome[V]{res: m.v.result(SourceCache, now), how: answerOf(st)}
		if st == sNegative {
			o.err = c.notFound
		}
		m.fl.end(o)
		m.state = mDone
		if st == sStale && !m.v.m.leased(now) {
			c.refreshAsync(m.fl.ctx, m.fl.key, m.key, single, m.v.m.writtenAt)
		}
	case c.cfg.Lock.Disabled:
		m.state = mLoad
	case st == sOurs:
		m.lease, m.state = heldOf(m.fl.key, &m.v, 0), mLeased
	case st == sLeased:
		m.state = mSingle
	default:
		m.state = mRead // absent, expired or unusable: to be leased
	}
}

// memberFailed ends a member's use of the store: it is loaded with the
// batch and nothing is written for it; an ended batch context ends it.
func (c *Cache[K, V]) memberFailed(ctx context.Context, m *member[K, V], err error) {
	if ctx.Err() != nil {
		m.fl.end(c.failed(m.fl, m.fb, ctx.Err()))
		m.state = mDone
		return
	}
	m.state = mNoStore
}

// batchLease leases the members that need it: set-if-absent for an absent
// key, compare-and-swap over bytes no one will serve. One round trip on a
// store with batches.
func (c *Cache[K, V]) batchLease(ctx context.Context, members []*member[K, V], deadline time.Time) {
	var need []*member[K, V]
	for _, m := range members {
		if m.state == mRead {
			need = append(need, m)
		}
	}
	if len(need) == 0 {
		return
	}
	if !c.caps.hasBatch() || !c.caps.hasCAS() {
		for _, m := range need { // one at a time
			if m.token == nil {
				m.token = newToken()
			}
			var err error
			if m.v.st == sAbsent {
				lease := c.leaseEntry(m.token, time.Now())
				var stored bool
				if stored, err = c.setIfAbsent(ctx, m.fl.key, lease, c.cfg.Lock.TTL, deadline); stored {
					m.lease = &held{key: m.fl.key, token: m.token, bytes: lease}
				}
			} else {
				m.lease, err = c.takeOver(ctx, m.fl, &m.v, m.token, deadline)
			}
			switch {
			case err != nil:
				c.memberFailed(ctx, m, err)
			case m.lease != nil:
				m.state = mLeased
			default:
				m.state = mSingle // someone got there first
			}
		}
		return
	}
	now := time.Now()
	ops := make([]store.Op, len(need))
	for i, m := range need {
		if m.token == nil {
			m.token = newToken()
		}
		h := &held{key: m.fl.key, token: m.token}
		if m.v.st == sAbsent {
			h.bytes = c.leaseEntry(m.token, now)
			ops[i] = store.Op{Kind: store.OpSetIfAbsent, Key: m.fl.key, Value: h.bytes, TTL: c.cfg.Lock.TTL}
		} else {
			ttl := c.cfg.Lock.TTL
			if e, err := entry.Decode(m.v.raw); err == nil && e.Kind == entry.Value && e.Type == c.typ {
				e.LeaseToken, e.LeaseUntil = m.token, now.Add(c.cfg.Lock.TTL)
				h.bytes, h.embedded, h.keep = entry.Encode(&e), &e, m.v.m.keepUntil
				ttl = max(time.Until(h.keep), c.cfg.Lock.TTL)
			} else {
				h.bytes = c.leaseEntry(m.token, now)
			}
			ops[i] = store.Op{Kind: store.OpCompareAndSwap, Key: m.fl.key, Old: m.v.raw, Value: h.bytes, TTL: ttl}
		}
		m.lease = h
	}
	err := c.batch(ctx, ops, deadline)
	for i, m := range need {
		switch op := &ops[i]; {
		case err != nil || op.Err != nil:
			m.lease = nil
			c.memberFailed(ctx, m, errors.Join(err, op.Err))
		case op.OK:
			m.state = mLeased
		default:
			m.lease, m.state = nil, mSingle // someone got there first
		}
	}
}

// batchLoad calls load once with the members' keys, keeps their leases
// alive meanwhile, then answers each member and writes the answers back.
func (c *Cache[K, V]) batchLoad(shared *flight[V], ms []*member[K, V], load BatchLoader[K, V]) {
	keys := make([]K, len(ms))
	for i, m := range ms {
		keys[i] = m.key
	}
	var values map[K]V
	ch := c.callLoader(shared, keys[0], func(ctx context.Context, _ K) (V, error) {
		var err error
		values, err = load(ctx, keys)
		var zero V
		return zero, err
	})
	tick, stop := c.keepAliveTicker(true)
	defer stop()
	var r loaded[V]
wait:
	for {
		select {
		case r = <-ch:
			break wait
		case <-tick:
			for _, m := range ms {
				if m.lease != nil && !c.keepAlive(m.fl, m.lease) {
					m.lease = nil // lost: nothing to write back or release
				}
			}
		case <-shared.ctx.Done():
			c.stats.loadErrors.Add(1)
			c.record(Event{Kind: EventLoad, Outcome: "timeout", Duration: c.cfg.LoadTimeout})
			for _, m := range ms {
				o := c.failed(m.fl, m.fb, shared.ctx.Err())
				if m.lease != nil {
					if m.fb != nil && c.closeCtx.Err() == nil {
						c.rearm(m.fl, m.lease, m.fb)
					} else {
						c.release(m.fl, m.lease)
					}
				}
				m.fl.end(o)
			}
			return
		}
	}
	c.batchLoadDone(r)
	// Each key is judged as a single load would be, from the one answer.
	var writes []batchWrite[K, V]
	var after []func() // releases and re-arms, once the callers have their answers
	for _, m := range ms {
		one := r
		if !r.panicked && !r.exited && r.err == nil {
			v, ok := values[m.key]
			one.v = v
			if !ok {
				one.err = ErrNotFound
			}
		}
		o, kind, payload := c.judge(m.fl, one, m.fb, false)
		switch {
		case m.state == mNoStore:
		case kind == kindValue || kind == kindNotFound && c.cfg.NegativeTTL > 0:
			e, ttl := c.newEntry(kind, payload, r.took, shared.ttl, r.start)
			if o.err == nil {
				o.res.Expires = e.FreshUntil
			}
			writes = append(writes, batchWrite[K, V]{m, entry.Encode(&e), ttl})
		case m.lease != nil && kind == kindRearm:
			after = append(after, func() { c.rearm(m.fl, m.lease, m.fb) })
		case m.lease != nil:
			after = append(after, func() { c.release(m.fl, m.lease) })
		}
		m.fl.out = o // published below
	}
	publish := func() {
		for _, m := range ms {
			m.fl.publish(m.fl.out)
		}
	}
	if !c.caps.local {
		publish() // callers get their answers before the writes
	}
	c.batchWrite(writes)
	for _, f := range after {
		f()
	}
	publish()
}

// batchLoadDone reports the batch's one load.
func (c *Cache[K, V]) batchLoadDone(r loaded[V]) {
	how := "ok"
	switch {
	case r.panicked:
		how = "panic"
		c.log.Error("readthrough: batch loader panicked", "err", fmt.Errorf("panic: %v", r.panicVal), "stack", string(r.stack))
	case r.exited:
		how = "exit"
	case r.err != nil:
		how = "error"
	}
	c.loadDone("", r, how)
	if how == "ok" {
		c.loadEWMA.add(r.took)
	}
}

// batchWrite is a loaded entry to write back for a member.
type batchWrite[K comparable, V any] struct {
	m   *member[K, V]
	b   []byte
	ttl time.Duration
}

// batchWrite writes loaded entries back, each only while its key holds
// the member's lease and no Set or Delete in this process superseded it:
// one round trip on a store with batches.
func (c *Cache[K, V]) batchWrite(ws []batchWrite[K, V]) {
	// Hold the members' write locks, in key order, as a Set holds one.
	slices.SortFunc(ws, func(a, b batchWrite[K, V]) int { return strings.Compare(a.m.fl.key, b.m.fl.key) })
	ops := make([]store.Op, 0, len(ws))
	var unwritten []*member[K, V] // too large: their leases are released after
	for _, w := range ws {
		w.m.fl.wmu.Lock()
	}
	for _, w := range ws {
		switch {
		case w.m.fl.superseded.Load():
			continue // a Set or Delete won; its write stands
		case c.tooLarge(w.m.fl.key, w.b):
			unwritten = append(unwritten, w.m)
		case w.m.lease != nil && c.caps.hasCAS():
			ops = append(ops, store.Op{Kind: store.OpCompareAndSwap, Key: w.m.fl.key, Old: w.m.lease.bytes, Value: w.b, TTL: w.ttl})
		case w.m.lease != nil || w.m.state == mLoad:
			ops = append(ops, store.Op{Kind: store.OpSet, Key: w.m.fl.key, Value: w.b, TTL: w.ttl})
		}
		// A member whose lease was lost writes nothing: the key is someone else's.
	}
	if len(ops) > 0 {
		c.batchStore(ops)
		for _, op := range ops {
			c.invalidateLocal(op.Key) // no near copy from before our own write survives it
		}
	}
	for _, w := range ws {
		w.m.fl.wmu.Unlock()
	}
	for _, m := range unwritten {
		c.release(m.fl, m.lease)
	}
}

// batchStore writes ops in one round trip on a store with batches, one at
// a time on others.
func (c *Cache[K, V]) batchStore(ops []store.Op) {
	ctx, cancel := c.bgCtx()
	defer cancel()
	deadline := time.Now().Add(c.cfg.StoreTimeout)
	if c.caps.hasBatch() {
		if err := c.batch(ctx, ops, deadline); err != errUnsupported {
			return
		}
	}
	for _, op := range ops {
		if op.Kind == store.OpCompareAndSwap {
			if _, err := c.cas(ctx, op.Key, op.Old, op.Value, op.TTL, deadline); err != errUnsupported {
				continue
			}
		}
		_ = c.put(ctx, op.Key, op.Value, op.TTL, deadline)
	}
}

// batch runs ops in one store round trip, reported as one store call.
func (c *Cache[K, V]) batch(ctx context.Context, ops []store.Op, deadline time.Time) error {
	_, err := call(c, ctx, "batch", "", deadline, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, c.caps.batch.Batch(ctx, ops)
	})
	if err != nil && unsupported(err, &c.caps.noBatch) {
		return errUnsupported
	}
	return err
}
