package bench

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/store"
)

// CountedMemstore is a memstore that counts the calls made on it, and the
// operations inside each batch by kind. It has exactly memstore's
// capabilities, NonBlocking included, so the cache takes the path it takes
// on memstore itself (storetest.FaultyStore counts the same calls, but
// hides NonBlocking, which moves write-backs to the background).
type CountedMemstore struct {
	*memstore.Store
	mu      sync.Mutex
	calls   map[string]int
	batches []BatchCall
}

var (
	_ store.CompareAndSwapper = (*CountedMemstore)(nil)
	_ store.CompareAndDeleter = (*CountedMemstore)(nil)
	_ store.Batcher           = (*CountedMemstore)(nil)
	_ store.Notifier          = (*CountedMemstore)(nil)
	_ store.NonBlocking       = (*CountedMemstore)(nil)
)

// NewCountedMemstore returns an empty counted memstore.
func NewCountedMemstore() *CountedMemstore {
	return &CountedMemstore{Store: memstore.New(), calls: map[string]int{}}
}

func (s *CountedMemstore) count(method string) {
	s.mu.Lock()
	s.calls[method]++
	s.mu.Unlock()
}

// Calls returns the calls so far by method name ("Get", "Batch", ...),
// and each batch's operations.
func (s *CountedMemstore) Calls() (calls map[string]int, batches []BatchCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls), slices.Clone(s.batches)
}

// Reset sets the counts back to zero.
func (s *CountedMemstore) Reset() {
	s.mu.Lock()
	clear(s.calls)
	s.batches = nil
	s.mu.Unlock()
}

// Get implements readthrough.Store.
func (s *CountedMemstore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	s.count("Get")
	return s.Store.Get(ctx, key)
}

// Set implements readthrough.Store.
func (s *CountedMemstore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	s.count("Set")
	return s.Store.Set(ctx, key, value, ttl)
}

// SetIfAbsent implements readthrough.Store.
func (s *CountedMemstore) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	s.count("SetIfAbsent")
	return s.Store.SetIfAbsent(ctx, key, value, ttl)
}

// Delete implements readthrough.Store.
func (s *CountedMemstore) Delete(ctx context.Context, key string) error {
	s.count("Delete")
	return s.Store.Delete(ctx, key)
}

// CompareAndSwap implements store.CompareAndSwapper.
func (s *CountedMemstore) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	s.count("CompareAndSwap")
	return s.Store.CompareAndSwap(ctx, key, old, value, ttl)
}

// CompareAndDelete implements store.CompareAndDeleter.
func (s *CountedMemstore) CompareAndDelete(ctx context.Context, key string, value []byte) (bool, error) {
	s.count("CompareAndDelete")
	return s.Store.CompareAndDelete(ctx, key, value)
}

// Batch implements store.Batcher: one call, whatever it holds.
func (s *CountedMemstore) Batch(ctx context.Context, ops []store.Op) error {
	b := BatchCall{Ops: map[string]int{}}
	ttls := map[time.Duration]bool{}
	for _, op := range ops {
		b.Ops[op.Kind.String()]++
		if op.Kind == store.OpSet {
			ttls[op.TTL] = true
		}
	}
	b.SetTTLs = len(ttls)
	s.mu.Lock()
	s.calls["Batch"]++
	s.batches = append(s.batches, b)
	s.mu.Unlock()
	return s.Store.Batch(ctx, ops)
}

// BatchCall is one Batch call: how many operations of each kind it held.
type BatchCall struct {
	Ops     map[string]int // by kind: "Get", "SetIfAbsent", "CompareAndSwap", ...
	SetTTLs int            // distinct TTLs among its Sets
}

// MomentoRPCs is what the calls counted so far cost on momentostore, which
// has memstore's capabilities (no GetOrSet; compare-and-swap as
// SetIfEqual; batches), so the cache makes the same calls on it: one RPC
// per single-key call; per batch, one GetBatch RPC for its Gets, one
// SetBatch per TTL for its Sets, and one RPC for each other operation,
// those run concurrently. It returns the RPCs, and the sequential waves
// they take (each call one wave).
func (s *CountedMemstore) MomentoRPCs() (rpcs, waves int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for m, n := range s.calls {
		if m != "Batch" {
			rpcs += n
			waves += n
		}
	}
	for _, b := range s.batches {
		waves++
		for k, n := range b.Ops {
			switch k {
			case "Get":
				rpcs++
			case "Set":
				rpcs += b.SetTTLs
			default:
				rpcs += n
			}
		}
	}
	return rpcs, waves
}
