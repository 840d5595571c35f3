package storetest

import (
	"github.com/readthrough-go/readthrough/store"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/readthrough-go/readthrough"
)

// Op names a store operation, for injecting faults into it and counting it.
type Op string

// The operations of [readthrough.Store] and its optional interfaces.
const (
	OpGet              Op = "Get"
	OpSet              Op = "Set"
	OpSetIfAbsent      Op = "SetIfAbsent"
	OpDelete           Op = "Delete"
	OpCompareAndDelete Op = "CompareAndDelete"
)

// ErrInjected is the error a [Fault] returns when it names none.
var ErrInjected = errors.New("storetest: injected store failure")

// Fault is what an operation suffers. Delay comes first: the call waits for
// it (or for its context, returning ctx.Err()), then fails with Err if set,
// or goes through to the wrapped store.
type Fault struct {
	Err   error         // returned instead of calling the store
	Delay time.Duration // added before the call; use a long one for a hanging store
}

// FaultyStore wraps a [readthrough.Store], counting every call and
// injecting the faults you set, per operation. It is safe for concurrent
// use, and its delays follow testing/synctest's clock inside a bubble.
//
// It always implements [store.CompareAndDeleter]; when the wrapped
// store does not, CompareAndDelete returns an error matching
// [errors.ErrUnsupported] and the cache falls back to Delete, as it would
// with the wrapped store alone.
type FaultyStore struct {
	store readthrough.Store

	mu     sync.Mutex
	faults map[Op]Fault
	calls  map[Op]int
}

var (
	_ readthrough.Store             = (*FaultyStore)(nil)
	_ store.CompareAndDeleter = (*FaultyStore)(nil)
	_ store.Limiter           = (*FaultyStore)(nil)
)

// NewFaultyStore wraps s, with no faults yet.
func NewFaultyStore(s readthrough.Store) *FaultyStore {
	return &FaultyStore{store: s, faults: map[Op]Fault{}, calls: map[Op]int{}}
}

// Inject sets the fault for op, replacing any before it. A zero Fault with
// no Err and no Delay fails with [ErrInjected].
func (f *FaultyStore) Inject(op Op, fault Fault) {
	if fault.Err == nil && fault.Delay == 0 {
		fault.Err = ErrInjected
	}
	f.mu.Lock()
	f.faults[op] = fault
	f.mu.Unlock()
}

// InjectAll sets fault for every operation: a whole-store outage.
func (f *FaultyStore) InjectAll(fault Fault) {
	for _, op := range []Op{OpGet, OpSet, OpSetIfAbsent, OpDelete, OpCompareAndDelete} {
		f.Inject(op, fault)
	}
}

// Heal removes every fault; the store works again.
func (f *FaultyStore) Heal() {
	f.mu.Lock()
	clear(f.faults)
	f.mu.Unlock()
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

// enter counts op and applies its fault.
func (f *FaultyStore) enter(ctx context.Context, op Op) error {
	f.mu.Lock()
	f.calls[op]++
	fault, ok := f.faults[op]
	f.mu.Unlock()
	if !ok {
		return nil
	}
	if fault.Delay > 0 {
		t := time.NewTimer(fault.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fault.Err != nil {
		return fmt.Errorf("%s: %w", op, fault.Err)
	}
	return nil
}

// Get implements [readthrough.Store].
func (f *FaultyStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := f.enter(ctx, OpGet); err != nil {
		return nil, false, err
	}
	return f.store.Get(ctx, key)
}

// Set implements [readthrough.Store].
func (f *FaultyStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := f.enter(ctx, OpSet); err != nil {
		return err
	}
	return f.store.Set(ctx, key, value, ttl)
}

// SetIfAbsent implements [readthrough.Store].
func (f *FaultyStore) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := f.enter(ctx, OpSetIfAbsent); err != nil {
		return false, err
	}
	return f.store.SetIfAbsent(ctx, key, value, ttl)
}

// Delete implements [readthrough.Store].
func (f *FaultyStore) Delete(ctx context.Context, key string) error {
	if err := f.enter(ctx, OpDelete); err != nil {
		return err
	}
	return f.store.Delete(ctx, key)
}

// CompareAndDelete implements [store.CompareAndDeleter] by passing
// through to the wrapped store.
func (f *FaultyStore) CompareAndDelete(ctx context.Context, key string, value []byte) (bool, error) {
	if err := f.enter(ctx, OpCompareAndDelete); err != nil {
		return false, err
	}
	cad, ok := f.store.(store.CompareAndDeleter)
	if !ok {
		return false, fmt.Errorf("storetest: wrapped %T has no CompareAndDelete: %w", f.store, errors.ErrUnsupported)
	}
	return cad.CompareAndDelete(ctx, key, value)
}

// Limits passes through the wrapped store's limits, if it declares any.
func (f *FaultyStore) Limits() store.Limits {
	if l, ok := f.store.(store.Limiter); ok {
		return l.Limits()
	}
	return store.Limits{}
}
