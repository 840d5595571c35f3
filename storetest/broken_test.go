package storetest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/store"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// broken holds stores that break the contract in one way each, and the
// subtest of the suite that must catch it.
var broken = map[string]struct {
	subtest string
	store   func() readthrough.Store
}{
	"SetIfAbsent not idempotent": {"SetIfAbsentIdempotent", func() readthrough.Store { return strictSetIfAbsent{memstore.New()} }},
	"CompareAndSwap ignores old": {"CompareAndSwap", func() readthrough.Store { return blindCAS{memstore.New()} }},
	"GetOrSet not idempotent":    {"GetOrSet", func() readthrough.Store { return strictGetOrSet{getOrSetStore{memstore.New()}} }},
	"Notify ignores the prefix":  {"NotifyPrefix", func() readthrough.Store { return wideNotify{memstore.New()} }},
	"stop does not stop":         {"NotifyStop", func() readthrough.Store { return endlessNotify{memstore.New()} }},
	"Batch runs on a done ctx":   {"BatchCancelled", func() readthrough.Store { return eagerBatch{memstore.New()} }},
	"Batch drops unknown kinds":  {"Batch", func() readthrough.Store { return silentBatch{memstore.New()} }},
	"limit without ErrTooLarge":  {"Limits", func() readthrough.Store { return lax{memstore.New()} }},
}

// TestSuiteCatchesBrokenStores runs the suite's subtest for each broken
// store in a child process (a failing subtest would fail this test in
// this one), and checks that it fails.
func TestSuiteCatchesBrokenStores(t *testing.T) {
	t.Parallel()
	for name, b := range broken {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBrokenStore$/^"+b.subtest+"$", "-test.v")
			cmd.Env = append(os.Environ(), "STORETEST_BROKEN="+name)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "the suite passed a store where %s:\n%s", name, out)
			assert.Contains(t, string(out), "--- FAIL: TestBrokenStore/"+b.subtest, "%s", out)
		})
	}
}

// TestBrokenStore is the child of TestSuiteCatchesBrokenStores.
func TestBrokenStore(t *testing.T) {
	name := os.Getenv("STORETEST_BROKEN")
	if name == "" {
		t.Skip("run by TestSuiteCatchesBrokenStores")
	}
	storetest.Run(t, func(*testing.T) readthrough.Store { return broken[name].store() })
}

// strictSetIfAbsent reports false on a held key, even one holding value.
type strictSetIfAbsent struct{ *memstore.Store }

func (s strictSetIfAbsent) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if _, ok, _ := s.Get(ctx, key); ok {
		return false, nil
	}
	return s.Store.SetIfAbsent(ctx, key, value, ttl)
}

// blindCAS swaps whatever the key holds.
type blindCAS struct{ *memstore.Store }

func (s blindCAS) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	return true, s.Set(ctx, key, value, ttl)
}

// strictGetOrSet reports stored == false on a key holding value.
type strictGetOrSet struct{ getOrSetStore }

func (s strictGetOrSet) GetOrSet(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	if cur, ok, _ := s.Get(ctx, key); ok {
		return cur, false, nil
	}
	return s.getOrSetStore.GetOrSet(ctx, key, value, ttl)
}

// wideNotify reports every key, whatever the prefix.
type wideNotify struct{ *memstore.Store }

func (s wideNotify) Notify(_ string, l store.Listener) (func(), error) { return s.Store.Notify("", l) }

// endlessNotify's stop does nothing.
type endlessNotify struct{ *memstore.Store }

func (s endlessNotify) Notify(prefix string, l store.Listener) (func(), error) {
	_, err := s.Store.Notify(prefix, l)
	return func() {}, err
}

// eagerBatch leaves a done context to each operation, and reports no error.
type eagerBatch struct{ *memstore.Store }

func (s eagerBatch) Batch(ctx context.Context, ops []store.Op) error {
	_ = s.Store.Batch(context.WithoutCancel(ctx), ops)
	return nil
}

// silentBatch leaves operations of unknown kinds untouched.
type silentBatch struct{ *memstore.Store }

func (s silentBatch) Batch(ctx context.Context, ops []store.Op) error {
	if err := s.Store.Batch(ctx, ops); err != nil {
		return err
	}
	for i := range ops {
		if op := &ops[i]; op.Kind > store.OpDelete && errors.Is(op.Err, errors.ErrUnsupported) {
			op.Err = nil
		}
	}
	return nil
}

// lax declares a limit it does not enforce.
type lax struct{ *memstore.Store }

func (lax) Limits() store.Limits { return store.Limits{MaxEntrySize: 1000} }
