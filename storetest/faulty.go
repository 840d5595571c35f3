package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/store"
)

// Op names a store operation, for injecting faults into it and counting it.
type Op string

// The operations of [readthrough.Store] and its optional capabilities.
const (
	OpGet              Op = "Get"
	OpSet              Op = "Set"
	OpSetIfAbsent      Op = "SetIfAbsent"
	OpDelete           Op = "Delete"
	OpCompareAndDelete Op = "CompareAndDelete"
	OpGetOrSet         Op = "GetOrSet"
	OpCompareAndSwap   Op = "CompareAndSwap"
	OpBatch            Op = "Batch" // a whole batch, counted once whatever it holds
	OpNotify           Op = "Notify"
)

// allOps is every Op, for InjectAll.
var allOps = []Op{
	OpGet, OpSet, OpSetIfAbsent, OpDelete, OpCompareAndDelete,
	OpGetOrSet, OpCompareAndSwap, OpBatch, OpNotify,
}

// opOf is the Op of a batch operation's kind, "" for unknown kinds.
func opOf(k store.OpKind) Op {
	switch k {
	case store.OpGet:
		return OpGet
	case store.OpSet:
		return OpSet
	case store.OpSetIfAbsent:
		return OpSetIfAbsent
	case store.OpGetOrSet:
		return OpGetOrSet
	case store.OpCompareAndSwap:
		return OpCompareAndSwap
	case store.OpDelete:
		return OpDelete
	}
	return ""
}

// ErrInjected is the error a [Fault] returns when it names none.
var ErrInjected = errors.New("storetest: injected store failure")

// Fault is what an operation suffers, modelled on what real clients do.
//
// In order: the call waits Delay (or until its context is done, returning
// ctx.Err(), unless IgnoreContext); then it fails with Err without
// reaching the store, unless LoseReply; otherwise it goes through to the
// wrapped store, and with LoseReply its answer is replaced by Err (the
// operation took effect, the caller cannot know); finally bytes it read
// are cut short by Truncate and flipped by Corrupt.
//
// A Fault with none of Err, Delay, Truncate and Corrupt set fails with
// [ErrInjected].
type Fault struct {
	// Err is returned instead of the store's answer.
	Err error
	// Delay is waited before the call; use a long one for a hanging store.
	// Notify, which must return at once, does not wait it.
	Delay time.Duration
	// IgnoreContext makes the call wait all of Delay whatever its context,
	// as go-redis's default client does on a dead connection: a done
	// context does not cut the wait short (the wrapped store, called
	// after it, may then fail with ctx.Err()).
	IgnoreContext bool
	// Times limits the fault to the next Times calls it hits, after which
	// it is removed; zero means every call until Heal.
	Times int
	// Key limits the fault to calls on this key (for Notify, on this
	// prefix); empty means every key. A Key-scoped fault also hits the
	// operations of its kind on that key inside a batch (for OpBatch,
	// those of every kind), setting that operation's Err; faults without
	// a Key do not reach inside batches, which are their own round trips.
	Key string
	// LoseReply lets the call reach the store and take effect, then
	// returns Err (or ErrInjected) instead of its answer: a connection
	// dropped after the server applied the command. The cache's retries
	// must then be idempotent.
	LoseReply bool
	// Truncate drops this many bytes from the end of the bytes a read
	// returns (Get, GetOrSet, and Get and GetOrSet in a batch): a value
	// cut short.
	Truncate int
	// Corrupt flips every bit of the last byte a read returns, which in a
	// readthrough entry is the codec's payload (its header is at the
	// front).
	Corrupt bool
}

// mangles reports whether f alters the bytes reads return.
func (f *Fault) mangles() bool { return f.Truncate > 0 || f.Corrupt }

// mangle applies Truncate and Corrupt to v, which the caller owns.
func (f *Fault) mangle(v []byte) []byte {
	if f.Truncate > 0 {
		v = v[:max(len(v)-f.Truncate, 0)]
	}
	if f.Corrupt && len(v) > 0 {
		v[len(v)-1] ^= 0xff
	}
	return v
}

// lost is the error a LoseReply fault puts in place of the answer, or nil.
func (f *Fault) lost(op Op) error {
	if !f.LoseReply {
		return nil
	}
	err := f.Err
	if err == nil {
		err = ErrInjected
	}
	return fmt.Errorf("%s: reply lost: %w", op, err)
}

// fail is the error a fault returns before the call reaches the store, or
// nil. It waits Delay first.
func (f *Fault) fail(ctx context.Context, op Op) error {
	if f.Delay > 0 {
		if f.IgnoreContext {
			time.Sleep(f.Delay)
		} else {
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
	}
	if f.Err != nil && !f.LoseReply {
		return fmt.Errorf("%s: %w", op, f.Err)
	}
	return nil
}

// FaultyStore wraps a [readthrough.Store], counting every call and
// injecting the faults you set, one per operation. It is safe for
// concurrent use, starts no goroutine, and its delays follow
// testing/synctest's clock inside a bubble.
//
// It implements every capability of package store but
// [store.NonBlocking] (it can delay): [store.GetOrSetter],
// [store.CompareAndSwapper], [store.CompareAndDeleter], [store.Notifier],
// [store.Batcher] and [store.Limiter]. When the wrapped store lacks one,
// the method returns an error matching [errors.ErrUnsupported] (Limits
// returns no limits), and the cache carries on as it would with the
// wrapped store alone. Wrap a store in [Plain] first to hide every
// capability from the type assertions.
type FaultyStore struct {
	store readthrough.Store

	mu        sync.Mutex
	faults    map[Op]*Fault
	calls     map[Op]int
	down      error // set by Disconnect, until Reconnect
	listeners map[*listener]struct{}
}

var (
	_ readthrough.Store       = (*FaultyStore)(nil)
	_ store.GetOrSetter       = (*FaultyStore)(nil)
	_ store.CompareAndSwapper = (*FaultyStore)(nil)
	_ store.CompareAndDeleter = (*FaultyStore)(nil)
	_ store.Notifier          = (*FaultyStore)(nil)
	_ store.Batcher           = (*FaultyStore)(nil)
	_ store.Limiter           = (*FaultyStore)(nil)
)

// NewFaultyStore wraps s, with no faults yet.
func NewFaultyStore(s readthrough.Store) *FaultyStore {
	return &FaultyStore{
		store:     s,
		faults:    map[Op]*Fault{},
		calls:     map[Op]int{},
		listeners: map[*listener]struct{}{},
	}
}

// Inject sets the fault for op, replacing any before it.
func (f *FaultyStore) Inject(op Op, fault Fault) {
	if fault.Err == nil && fault.Delay == 0 && !fault.mangles() {
		fault.Err = ErrInjected
	}
	f.mu.Lock()
	f.faults[op] = &fault
	f.mu.Unlock()
}

// InjectAll sets fault for every operation: a whole-store outage. Each
// operation gets its own copy, so Times counts calls of each separately.
func (f *FaultyStore) InjectAll(fault Fault) {
	for _, op := range allOps {
		f.Inject(op, fault)
	}
}

// Heal removes every fault, and reconnects after [FaultyStore.Disconnect];
// the store works again.
func (f *FaultyStore) Heal() {
	f.mu.Lock()
	clear(f.faults)
	f.mu.Unlock()
	f.Reconnect()
}

// Calls returns how many times op was called, faulty or not.
func (f *FaultyStore) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// TotalCalls returns the number of calls of every operation: the store
// round trips the code under test made.
func (f *FaultyStore) TotalCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

// ResetCalls sets every count back to zero.
func (f *FaultyStore) ResetCalls() {
	f.mu.Lock()
	clear(f.calls)
	f.mu.Unlock()
}

// pick returns the fault that a call of op on key suffers, and uses up one
// of its Times. Inside a batch only Key-scoped faults apply.
func (f *FaultyStore) pick(op Op, key string, inBatch bool) (Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl := f.faults[op]
	if fl == nil || fl.Key != "" && fl.Key != key || inBatch && fl.Key == "" {
		return Fault{}, false
	}
	if fl.Times > 0 {
		if fl.Times--; fl.Times == 0 {
			delete(f.faults, op)
		}
	}
	return *fl, true
}

// enter counts a call of op on key and picks its fault; the error is the
// fault's, when the call must not reach the store.
func (f *FaultyStore) enter(ctx context.Context, op Op, key string) (Fault, error) {
	f.mu.Lock()
	f.calls[op]++
	f.mu.Unlock()
	fl, _ := f.pick(op, key, false)
	return fl, fl.fail(ctx, op)
}

func unsupported(s readthrough.Store, method string) error {
	return fmt.Errorf("storetest: wrapped %T has no %s: %w", s, method, errors.ErrUnsupported)
}

// Get implements [readthrough.Store].
func (f *FaultyStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	fl, err := f.enter(ctx, OpGet, key)
	if err != nil {
		return nil, false, err
	}
	v, ok, err := f.store.Get(ctx, key)
	if lost := fl.lost(OpGet); lost != nil {
		return nil, false, lost
	}
	return fl.mangle(v), ok, err
}

// Set implements [readthrough.Store].
func (f *FaultyStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	fl, err := f.enter(ctx, OpSet, key)
	if err != nil {
		return err
	}
	err = f.store.Set(ctx, key, value, ttl)
	if lost := fl.lost(OpSet); lost != nil {
		return lost
	}
	return err
}

// SetIfAbsent implements [readthrough.Store].
func (f *FaultyStore) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	fl, err := f.enter(ctx, OpSetIfAbsent, key)
	if err != nil {
		return false, err
	}
	stored, err := f.store.SetIfAbsent(ctx, key, value, ttl)
	if lost := fl.lost(OpSetIfAbsent); lost != nil {
		return false, lost
	}
	return stored, err
}

// Delete implements [readthrough.Store].
func (f *FaultyStore) Delete(ctx context.Context, key string) error {
	fl, err := f.enter(ctx, OpDelete, key)
	if err != nil {
		return err
	}
	err = f.store.Delete(ctx, key)
	if lost := fl.lost(OpDelete); lost != nil {
		return lost
	}
	return err
}

// GetOrSet implements [store.GetOrSetter] by passing through to the
// wrapped store.
func (f *FaultyStore) GetOrSet(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	fl, err := f.enter(ctx, OpGetOrSet, key)
	if err != nil {
		return nil, false, err
	}
	gs, ok := f.store.(store.GetOrSetter)
	if !ok {
		return nil, false, unsupported(f.store, "GetOrSet")
	}
	cur, stored, err := gs.GetOrSet(ctx, key, value, ttl)
	if lost := fl.lost(OpGetOrSet); lost != nil {
		return nil, false, lost
	}
	if !stored && cur != nil {
		cur = fl.mangle(cur)
	}
	return cur, stored, err
}

// CompareAndSwap implements [store.CompareAndSwapper] by passing through
// to the wrapped store.
func (f *FaultyStore) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	fl, err := f.enter(ctx, OpCompareAndSwap, key)
	if err != nil {
		return false, err
	}
	cas, ok := f.store.(store.CompareAndSwapper)
	if !ok {
		return false, unsupported(f.store, "CompareAndSwap")
	}
	swapped, err := cas.CompareAndSwap(ctx, key, old, value, ttl)
	if lost := fl.lost(OpCompareAndSwap); lost != nil {
		return false, lost
	}
	return swapped, err
}

// CompareAndDelete implements [store.CompareAndDeleter] by passing
// through to the wrapped store.
func (f *FaultyStore) CompareAndDelete(ctx context.Context, key string, value []byte) (bool, error) {
	fl, err := f.enter(ctx, OpCompareAndDelete, key)
	if err != nil {
		return false, err
	}
	cad, ok := f.store.(store.CompareAndDeleter)
	if !ok {
		return false, unsupported(f.store, "CompareAndDelete")
	}
	deleted, err := cad.CompareAndDelete(ctx, key, value)
	if lost := fl.lost(OpCompareAndDelete); lost != nil {
		return false, lost
	}
	return deleted, err
}

// Batch implements [store.Batcher] by passing through to the wrapped
// store. The batch counts as one call of OpBatch, whose fault applies to
// the whole batch; Key-scoped faults also hit the operations on their key
// inside it, each failing (or losing its reply, or reading mangled bytes)
// on its own.
func (f *FaultyStore) Batch(ctx context.Context, ops []store.Op) error {
	whole, err := f.enter(ctx, OpBatch, "")
	if err != nil {
		return err
	}
	b, ok := f.store.(store.Batcher)
	if !ok {
		return unsupported(f.store, "Batch")
	}
	// Per operation faults, and the operations that still reach the store.
	each := make([]Fault, len(ops))
	fwd := make([]store.Op, 0, len(ops))
	idx := make([]int, 0, len(ops))
	for i := range ops {
		op := &ops[i]
		var hit bool
		if each[i], hit = f.pick(opOf(op.Kind), op.Key, true); !hit {
			each[i], _ = f.pick(OpBatch, op.Key, true)
		}
		if err := each[i].fail(ctx, opOf(op.Kind)); err != nil {
			op.Result, op.OK, op.Err = nil, false, err
			continue
		}
		fwd = append(fwd, *op)
		idx = append(idx, i)
	}
	if err := b.Batch(ctx, fwd); err != nil {
		return err
	}
	if lost := whole.lost(OpBatch); lost != nil {
		return lost
	}
	for j, i := range idx {
		op, fl := &ops[i], &each[i]
		*op = fwd[j]
		if lost := fl.lost(opOf(op.Kind)); lost != nil {
			op.Result, op.OK, op.Err = nil, false, lost
			continue
		}
		if op.Result != nil {
			op.Result = fl.mangle(whole.mangle(op.Result))
		}
	}
	return nil
}

// Limits passes through the wrapped store's limits, if it declares any.
func (f *FaultyStore) Limits() store.Limits {
	if l, ok := f.store.(store.Limiter); ok {
		return l.Limits()
	}
	return store.Limits{}
}

// Notify implements [store.Notifier] by passing through to the wrapped
// store, through a listener that [FaultyStore.Disconnect] can cut off.
// It never waits a fault's Delay; a LoseReply fault registers and
// unregisters at once, then fails.
func (f *FaultyStore) Notify(prefix string, l store.Listener) (stop func(), err error) {
	f.mu.Lock()
	f.calls[OpNotify]++
	f.mu.Unlock()
	fl, _ := f.pick(OpNotify, prefix, false)
	fl.Delay = 0
	if err := fl.fail(context.Background(), OpNotify); err != nil {
		return nil, err
	}
	n, ok := f.store.(store.Notifier)
	if !ok {
		return nil, unsupported(f.store, "Notify")
	}
	w := &listener{f: f, l: l}
	f.mu.Lock()
	f.listeners[w] = struct{}{}
	f.mu.Unlock()
	innerStop, err := n.Notify(prefix, w)
	if err == nil {
		err = fl.lost(OpNotify)
	} else {
		innerStop = func() {}
	}
	var once sync.Once
	stop = func() {
		once.Do(func() { w.stop(innerStop) })
	}
	if err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// stop unregisters w, inside and out, waiting for calls to l to end.
func (w *listener) stop(innerStop func()) {
	innerStop()
	w.f.mu.Lock()
	delete(w.f.listeners, w)
	w.f.mu.Unlock()
	w.mu.Lock() // wait for a Disconnect or Reconnect calling l
	w.stopped = true
	w.mu.Unlock()
}

// Disconnect cuts the notification link: every listener registered
// through f is told Disconnected(err), and changes are not reported (they
// are lost, as on a dropped connection) until [FaultyStore.Reconnect] or
// [FaultyStore.Heal]. The wrapped store is untouched.
func (f *FaultyStore) Disconnect(err error) {
	if err == nil {
		err = ErrInjected
	}
	f.mu.Lock()
	was := f.down
	f.down = err
	ls := f.listenerList()
	f.mu.Unlock()
	if was != nil {
		return
	}
	for _, w := range ls {
		w.call(func(l store.Listener) { l.Disconnected(err) })
	}
}

// Reconnect ends a [FaultyStore.Disconnect]: each listener whose wrapped
// store reports it connected is told Connected again, with what the
// wrapped store said of completeness, and changes are reported again.
func (f *FaultyStore) Reconnect() {
	f.mu.Lock()
	was := f.down
	f.down = nil
	ls := f.listenerList()
	f.mu.Unlock()
	if was == nil {
		return
	}
	for _, w := range ls {
		w.mu.RLock()
		if !w.stopped && w.up {
			w.l.Connected(w.complete)
		}
		w.mu.RUnlock()
	}
}

func (f *FaultyStore) listenerList() []*listener {
	ls := make([]*listener, 0, len(f.listeners))
	for w := range f.listeners {
		ls = append(ls, w)
	}
	return ls
}

func (f *FaultyStore) isDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down != nil
}

// listener stands between the wrapped store and a Listener, dropping what
// a cut link would lose.
type listener struct {
	f *FaultyStore
	l store.Listener

	mu       sync.RWMutex // held shared while calling l, exclusively by stop
	stopped  bool
	up       bool // the wrapped store's last word was Connected
	complete bool // and what it said of completeness
}

func (w *listener) call(fn func(store.Listener)) {
	w.mu.RLock()
	if !w.stopped {
		fn(w.l)
	}
	w.mu.RUnlock()
}

func (w *listener) Connected(complete bool) {
	w.mu.Lock()
	w.up, w.complete = true, complete
	w.mu.Unlock()
	if !w.f.isDown() {
		w.call(func(l store.Listener) { l.Connected(complete) })
	}
}

func (w *listener) Changed(key string) {
	if !w.f.isDown() {
		w.call(func(l store.Listener) { l.Changed(key) })
	}
}

func (w *listener) Disconnected(err error) {
	w.mu.Lock()
	w.up = false
	w.mu.Unlock()
	if !w.f.isDown() {
		w.call(func(l store.Listener) { l.Disconnected(err) })
	}
}

// Plain returns s with only the four methods of [readthrough.Store]: every
// optional capability is hidden from type assertions, so a test can take
// the cache's generic path over a store that has them.
func Plain(s readthrough.Store) readthrough.Store { return plain{s} }

// plain embeds the interface, whose method set is all it promotes.
type plain struct{ readthrough.Store }
