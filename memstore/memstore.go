// Package memstore is an in-process [readthrough.Store]: the embedded
// default for a single process, and the fake to swap in for a remote
// store in unit tests.
//
// It starts no goroutines: expired entries are dropped when touched, and
// each write also sweeps a couple of entries, so it works inside
// testing/synctest bubbles, where its TTLs follow the bubble's fake clock.
// It implements the optional [store.CompareAndDeleter] (owner-safe
// lock release) and, when bounded by bytes, [store.Limiter].
package memstore

import (
	"github.com/readthrough-go/readthrough/store"
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/readthrough-go/readthrough"
)

var (
	_ readthrough.Store             = (*Store)(nil)
	_ store.CompareAndDeleter = (*Store)(nil)
	_ store.Limiter           = (*Store)(nil)
	_ store.NonBlocking       = (*Store)(nil)
)

// Store is an in-memory, TTL-honouring [readthrough.Store], safe for
// concurrent use. Create it with [New].
type Store struct {
	maxEntries int
	maxBytes   int

	mu    sync.Mutex
	items map[string]*item
	lru   list.List // of *item, most recent first; kept only when bounded
	size  int       // sum of len(key)+len(value)
}

type item struct {
	key     string
	value   []byte // never modified after Set: readers copy it outside the lock
	expires time.Time
	elem    *list.Element
}

// Option configures a [Store].
type Option func(*Store)

// WithMaxEntries bounds the store to n entries, evicting the least
// recently used beyond it. n <= 0 means no bound.
func WithMaxEntries(n int) Option { return func(s *Store) { s.maxEntries = max(n, 0) } }

// WithMaxBytes bounds the store to n bytes of keys and values, evicting
// the least recently used beyond it. A single value that cannot fit is
// refused with an error. n <= 0 means no bound.
func WithMaxBytes(n int) Option { return func(s *Store) { s.maxBytes = max(n, 0) } }

// New returns an empty store, unbounded unless options say otherwise.
func New(opts ...Option) *Store {
	s := &Store{items: make(map[string]*item)}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Store) bounded() bool { return s.maxEntries > 0 || s.maxBytes > 0 }

// Get returns a copy of key's value, or ok == false if it is absent or
// expired.
func (s *Store) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	now := time.Now()
	s.mu.Lock()
	it := s.live(key, now)
	if it == nil {
		s.mu.Unlock()
		return nil, false, nil
	}
	if it.elem != nil {
		s.lru.MoveToFront(it.elem)
	}
	v := it.value
	s.mu.Unlock()
	return bytes.Clone(v), true, nil
}

var errTTL = errors.New("memstore: ttl must be positive")

// Set stores a copy of value under key for ttl.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := s.checkWrite(ctx, key, value, ttl); err != nil {
		return err
	}
	v := bytes.Clone(value)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(key, v, now.Add(ttl), now)
	return nil
}

// SetIfAbsent stores a copy of value under key for ttl only if key holds
// no live entry, and reports whether it did.
func (s *Store) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := s.checkWrite(ctx, key, value, ttl); err != nil {
		return false, err
	}
	v := bytes.Clone(value)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live(key, now) != nil {
		return false, nil
	}
	s.put(key, v, now.Add(ttl), now)
	return true, nil
}

// Delete removes key. Deleting a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.items[key]; ok {
		s.remove(it)
	}
	return nil
}

// CompareAndDelete removes key only if it holds value, and reports whether
// it did.
func (s *Store) CompareAndDelete(ctx context.Context, key string, value []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.live(key, time.Now())
	if it == nil || !bytes.Equal(it.value, value) {
		return false, nil
	}
	s.remove(it)
	return true, nil
}

// NonBlocking tells the cache that no call waits on I/O, so it need not
// bound them with a timeout.
func (s *Store) NonBlocking() {}

// Limits reports MaxEntrySize when the store is bounded by bytes.
func (s *Store) Limits() store.Limits {
	return store.Limits{MaxEntrySize: s.maxBytes}
}

// Len returns the number of live entries.
func (s *Store) Len() int {
	return len(s.Keys())
}

// Size returns the bytes held, keys and values, expired entries not yet
// reclaimed included.
func (s *Store) Size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Keys returns the live keys, sorted: handy for assertions in tests.
func (s *Store) Keys() []string {
	now := time.Now()
	s.mu.Lock()
	keys := make([]string, 0, len(s.items))
	for k, it := range s.items {
		if now.Before(it.expires) {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	slices.Sort(keys)
	return keys
}

func (s *Store) checkWrite(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("%w (got %v)", errTTL, ttl)
	}
	if s.maxBytes > 0 && len(key)+len(value) > s.maxBytes {
		return fmt.Errorf("memstore: entry of %d bytes exceeds the bound of %d", len(key)+len(value), s.maxBytes)
	}
	return nil
}

// live returns key's item if it has not expired, dropping it if it has.
// s.mu must be held.
func (s *Store) live(key string, now time.Time) *item {
	it, ok := s.items[key]
	if !ok {
		return nil
	}
	if !now.Before(it.expires) {
		s.remove(it)
		return nil
	}
	return it
}

// put inserts or replaces key, evicts beyond the bounds, and sweeps a
// little. s.mu must be held.
func (s *Store) put(key string, v []byte, expires, now time.Time) {
	if old, ok := s.items[key]; ok {
		s.remove(old)
	}
	it := &item{key: key, value: v, expires: expires}
	s.items[key] = it
	s.size += len(key) + len(v)
	if s.bounded() {
		it.elem = s.lru.PushFront(it)
		for s.maxEntries > 0 && len(s.items) > s.maxEntries || s.maxBytes > 0 && s.size > s.maxBytes {
			s.remove(s.lru.Back().Value.(*item))
		}
	}
	s.sweep(now, 2)
}

// sweep drops expired entries among n picked at random (map order), so an
// unbounded store of keys never read again does not grow without end.
func (s *Store) sweep(now time.Time, n int) {
	for _, it := range s.items {
		if !now.Before(it.expires) {
			s.remove(it)
		}
		if n--; n == 0 {
			return
		}
	}
}

func (s *Store) remove(it *item) {
	delete(s.items, it.key)
	s.size -= len(it.key) + len(it.value)
	if it.elem != nil {
		s.lru.Remove(it.elem)
	}
}
