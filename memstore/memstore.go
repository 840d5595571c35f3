// Package memstore is an in-process [readthrough.Store]: the embedded
// default for a single process, and the fake to swap in for a remote
// store in unit tests.
//
// # Bounds
//
// A store is unbounded by default: an entry lives until its TTL, however
// many there are, so memory follows what the caches write. For production
// use, bound it with [WithMaxEntries] or [WithMaxBytes] (or both): beyond
// the bound the least recently used entries are evicted.
//
// # Expiry without goroutines
//
// The store starts no goroutines and no timers, so it works inside
// testing/synctest bubbles, where its TTLs follow the bubble's fake clock.
// Instead it keeps its entries ordered by expiry, and every method that
// reads or writes it first drops every entry that has expired: expired
// entries are freed by the next call of any method (Get, Set,
// SetIfAbsent, Delete, CompareAndSwap, CompareAndDelete, Batch, Notify,
// Len, Size, Keys). When the store has lost most of its entries it
// rebuilds its index, since a Go map never gives memory back.
//
// # Capabilities
//
// It implements [store.CompareAndSwapper], [store.CompareAndDeleter],
// [store.Notifier] (every change, made by any caller, is reported before
// the call that made it returns), [store.Batcher], [store.Limiter] and
// [store.NonBlocking]. It does not implement [store.GetOrSetter]: that
// saves a round trip on a remote store, but in process a plain Get is
// cheaper on hits, and a hit is what a cache mostly does.
package memstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/store"
)

var (
	_ readthrough.Store       = (*Store)(nil)
	_ store.CompareAndSwapper = (*Store)(nil)
	_ store.CompareAndDeleter = (*Store)(nil)
	_ store.Notifier          = (*Store)(nil)
	_ store.Batcher           = (*Store)(nil)
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
	peak  int     // the most entries items has held since it was made: a map's memory follows its peak
	byExp []*item // min-heap on expires
	lru   item    // sentinel of the recency list, most recent at lru.next; kept only when bounded
	size  int     // sum of len(key)+len(value)
	regs  []*reg  // listeners; copied on change, so a snapshot can be read unlocked
}

type item struct {
	key        string
	value      []byte // its bytes are never modified, so readers copy them outside the lock; an overwrite replaces the slice
	expires    time.Time
	idx        int   // position in byExp
	prev, next *item // recency list, when bounded
}

// Option configures a [Store].
type Option func(*Store)

// WithMaxEntries bounds the store to n entries, evicting the least
// recently used beyond it. n <= 0 means no bound.
func WithMaxEntries(n int) Option { return func(s *Store) { s.maxEntries = max(n, 0) } }

// WithMaxBytes bounds the store to n bytes of keys and values, evicting
// the least recently used beyond it. An entry whose key and value
// together exceed n is refused with an error wrapping [store.ErrTooLarge],
// and [Store.Limits] declares n as MaxEntrySize. n <= 0 means no bound.
func WithMaxBytes(n int) Option { return func(s *Store) { s.maxBytes = max(n, 0) } }

// New returns an empty store, unbounded unless options say otherwise.
func New(opts ...Option) *Store {
	s := &Store{items: make(map[string]*item)}
	for _, o := range opts {
		o(s)
	}
	s.lru.next, s.lru.prev = &s.lru, &s.lru
	return s
}

func (s *Store) bounded() bool { return s.maxEntries > 0 || s.maxBytes > 0 }

var errTTL = errors.New("memstore: ttl must be positive")

// Get returns a copy of key's value, or ok == false if it is absent or
// expired.
func (s *Store) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	now := time.Now()
	s.mu.Lock()
	var changed []string
	if s.expiring(now) {
		changed = s.expire(now, nil)
	}
	it := s.items[key]
	var v []byte // read under the lock: a write replaces it
	if it != nil {
		v = it.value
		if it.prev != nil {
			s.touch(it)
		}
	}
	if changed != nil {
		s.unlockAndNotify(changed)
	} else {
		s.mu.Unlock()
	}
	if it == nil {
		return nil, false, nil
	}
	return bytes.Clone(v), true, nil
}

// Set stores a copy of value under key for ttl.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := s.checkWrite(ctx, key, value, ttl); err != nil {
		return err
	}
	v := bytes.Clone(value)
	now := time.Now()
	s.mu.Lock()
	changed := s.expire(now, nil)
	changed = s.put(key, v, now.Add(ttl), changed)
	s.unlockAndNotify(changed)
	return nil
}

// SetIfAbsent stores a copy of value under key for ttl only if key holds
// no live entry, and reports whether it did. It also reports true, and
// changes nothing, when key already holds exactly value, so a call
// retried after its reply was lost stays idempotent.
func (s *Store) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := s.checkWrite(ctx, key, value, ttl); err != nil {
		return false, err
	}
	now := time.Now()
	s.mu.Lock()
	changed := s.expire(now, nil)
	stored := false
	if it := s.items[key]; it != nil {
		stored = bytes.Equal(it.value, value)
	} else {
		changed = s.put(key, bytes.Clone(value), now.Add(ttl), changed)
		stored = true
	}
	s.unlockAndNotify(changed)
	return stored, nil
}

// CompareAndSwap stores a copy of value under key for ttl only if key
// holds exactly old, and reports whether it did; an absent or expired key
// never matches. The TTL is ttl from now, whatever key had left. Like
// SetIfAbsent, it also reports true, changing nothing, when key already
// holds exactly value.
func (s *Store) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	if err := s.checkWrite(ctx, key, value, ttl); err != nil {
		return false, err
	}
	now := time.Now()
	s.mu.Lock()
	changed := s.expire(now, nil)
	swapped := false
	if it := s.items[key]; it != nil {
		switch {
		case bytes.Equal(it.value, old):
			changed = s.put(key, bytes.Clone(value), now.Add(ttl), changed)
			swapped = true
		case bytes.Equal(it.value, value):
			swapped = true
		}
	}
	s.unlockAndNotify(changed)
	return swapped, nil
}

// Delete removes key. Deleting a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	changed := s.expire(time.Now(), nil)
	if it := s.items[key]; it != nil {
		changed = s.remove(it, changed)
		s.shrink()
	}
	s.unlockAndNotify(changed)
	return nil
}

// CompareAndDelete removes key only if it holds exactly value, and
// reports whether it did.
func (s *Store) CompareAndDelete(ctx context.Context, key string, value []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	changed := s.expire(time.Now(), nil)
	it := s.items[key]
	deleted := it != nil && bytes.Equal(it.value, value)
	if deleted {
		changed = s.remove(it, changed)
		s.shrink()
	}
	s.unlockAndNotify(changed)
	return deleted, nil
}

// Batch runs ops one after another, each as the method of its kind would,
// and fills their results. GetOrSet is unsupported (see the package doc):
// its ops get an error matching [errors.ErrUnsupported], as do unknown
// kinds. A batch on a done context returns ctx.Err() and runs nothing.
func (s *Store) Batch(ctx context.Context, ops []store.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i := range ops {
		op := &ops[i]
		op.Result, op.OK, op.Err = nil, false, nil
		switch op.Kind {
		case store.OpGet:
			op.Result, op.OK, op.Err = s.Get(ctx, op.Key)
		case store.OpSet:
			op.Err = s.Set(ctx, op.Key, op.Value, op.TTL)
		case store.OpSetIfAbsent:
			op.OK, op.Err = s.SetIfAbsent(ctx, op.Key, op.Value, op.TTL)
		case store.OpCompareAndSwap:
			op.OK, op.Err = s.CompareAndSwap(ctx, op.Key, op.Old, op.Value, op.TTL)
		case store.OpDelete:
			op.Err = s.Delete(ctx, op.Key)
		default:
			op.Err = fmt.Errorf("memstore: %v in a batch: %w", op.Kind, errors.ErrUnsupported)
		}
	}
	return nil
}

// NonBlocking tells the cache that no call waits on I/O, so it need not
// bound them with a timeout.
func (s *Store) NonBlocking() {}

// Limits reports MaxEntrySize, key and value together, when the store is
// bounded by bytes.
func (s *Store) Limits() store.Limits {
	return store.Limits{MaxEntrySize: s.maxBytes}
}

// Len returns the number of live entries.
func (s *Store) Len() int {
	s.mu.Lock()
	changed := s.expire(time.Now(), nil)
	n := len(s.items)
	s.unlockAndNotify(changed)
	return n
}

// Size returns the bytes held by live entries, keys and values.
func (s *Store) Size() int {
	s.mu.Lock()
	changed := s.expire(time.Now(), nil)
	n := s.size
	s.unlockAndNotify(changed)
	return n
}

// Keys returns the live keys, sorted: handy for assertions in tests.
func (s *Store) Keys() []string {
	s.mu.Lock()
	changed := s.expire(time.Now(), nil)
	keys := make([]string, 0, len(s.items))
	for k := range s.items {
		keys = append(keys, k)
	}
	s.unlockAndNotify(changed)
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
		return fmt.Errorf("memstore: entry of %d bytes (key and value) exceeds the bound of %d: %w",
			len(key)+len(value), s.maxBytes, store.ErrTooLarge)
	}
	return nil
}

// The methods below need s.mu held. Those that remove or replace entries
// append the keys they change to a slice, which is nil unless someone
// listens, for unlockAndNotify to report once the lock is released.

// expiring reports whether some entry has expired at now.
func (s *Store) expiring(now time.Time) bool {
	return len(s.byExp) > 0 && !now.Before(s.byExp[0].expires)
}

// expire drops every entry expired at now.
func (s *Store) expire(now time.Time, changed []string) []string {
	if !s.expiring(now) {
		return changed
	}
	for s.expiring(now) {
		changed = s.remove(s.byExp[0], changed)
	}
	s.shrink()
	return changed
}

// put stores key, replacing what it held, and evicts beyond the bounds.
func (s *Store) put(key string, v []byte, expires time.Time, changed []string) []string {
	if len(s.regs) > 0 {
		changed = append(changed, key)
	}
	if it := s.items[key]; it != nil {
		s.size += len(v) - len(it.value)
		it.value, it.expires = v, expires
		s.fix(it.idx)
		if it.prev != nil {
			s.touch(it)
		}
	} else {
		it = &item{key: key, value: v, expires: expires}
		s.items[key] = it
		s.peak = max(s.peak, len(s.items))
		s.size += len(key) + len(v)
		it.idx = len(s.byExp)
		s.byExp = append(s.byExp, it)
		s.up(it.idx)
		if s.bounded() {
			s.link(it)
		}
	}
	if s.maxEntries > 0 && len(s.items) > s.maxEntries || s.maxBytes > 0 && s.size > s.maxBytes {
		for s.maxEntries > 0 && len(s.items) > s.maxEntries || s.maxBytes > 0 && s.size > s.maxBytes {
			changed = s.remove(s.lru.prev, changed)
		}
		s.shrink() // large values may have pushed out many small ones
	}
	return changed
}

// remove drops it.
func (s *Store) remove(it *item, changed []string) []string {
	if len(s.regs) > 0 {
		changed = append(changed, it.key)
	}
	delete(s.items, it.key)
	s.size -= len(it.key) + len(it.value)
	s.heapRemove(it.idx)
	if it.prev != nil {
		it.prev.next, it.next.prev = it.next, it.prev
		it.prev, it.next = nil, nil
	}
	return changed
}

// shrink rebuilds what has fallen to a small part of its peak: the map,
// which otherwise keeps the memory of its largest size, and the heap's
// array. A rebuild copies fewer entries than a third of the removals
// since the last one, so it costs O(1) per removal.
func (s *Store) shrink() {
	if s.peak > shrinkMin && len(s.items) < s.peak/4 {
		m := make(map[string]*item, len(s.items))
		for k, v := range s.items {
			m[k] = v
		}
		s.items, s.peak = m, len(m)
	}
	if cap(s.byExp) > shrinkMin && len(s.byExp) < cap(s.byExp)/4 {
		s.byExp = slices.Clip(slices.Clone(s.byExp))
	}
}

// shrinkMin is the size below which the map and heap are never rebuilt:
// they cost little.
const shrinkMin = 64

// link puts a new item at the front of the recency list.
func (s *Store) link(it *item) {
	it.prev, it.next = &s.lru, s.lru.next
	s.lru.next.prev = it
	s.lru.next = it
}

// touch moves a listed item to the front of the recency list.
func (s *Store) touch(it *item) {
	if s.lru.next == it {
		return
	}
	it.prev.next, it.next.prev = it.next, it.prev
	s.link(it)
}

// The expiry heap, by hand rather than container/heap: no interface calls
// on the write path.

func (s *Store) less(i, j int) bool { return s.byExp[i].expires.Before(s.byExp[j].expires) }

func (s *Store) swap(i, j int) {
	h := s.byExp
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}

func (s *Store) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !s.less(j, i) {
			return
		}
		s.swap(i, j)
		j = i
	}
}

func (s *Store) down(i int) bool {
	i0, n := i, len(s.byExp)
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && s.less(r, j) {
			j = r
		}
		if !s.less(j, i) {
			break
		}
		s.swap(i, j)
		i = j
	}
	return i > i0
}

func (s *Store) fix(i int) {
	if !s.down(i) {
		s.up(i)
	}
}

func (s *Store) heapRemove(i int) {
	n := len(s.byExp) - 1
	if i != n {
		s.swap(i, n)
	}
	s.byExp[n] = nil // let the item go
	s.byExp = s.byExp[:n]
	if i != n {
		s.fix(i)
	}
}

// Notify registers l for changes to keys under prefix (every key when
// prefix is empty). It calls l.Connected(true) before it returns: an
// in-process store sees every writer, and from then on every change to a
// matching key (a Set, a SetIfAbsent that stored, a CompareAndSwap that
// swapped, a Delete or CompareAndDelete that removed a live entry, an
// eviction by the bounds, the removal of an expired entry) calls
// l.Changed(key) after the store's lock is released and before the call
// that made the change returns. An expired entry is reported when it is
// removed, by the next call of any method. Listeners may be called
// concurrently, from the goroutines of the callers that made the changes.
//
// stop unregisters l, waiting for calls to l that are running; none is
// made after it returns. It must not be called from within l's methods,
// which would wait for themselves.
func (s *Store) Notify(prefix string, l store.Listener) (stop func(), err error) {
	if l == nil {
		return nil, errors.New("memstore: Notify with a nil Listener")
	}
	r := &reg{prefix: prefix, l: l}
	// Connected comes first, and no change made after it is missed: r is
	// locked until Connected returns, so a change made once r is listed
	// waits to be reported after it.
	r.mu.Lock()
	s.mu.Lock()
	changed := s.expire(time.Now(), nil)
	regs := s.regs
	s.regs = append(slices.Clip(s.regs), r)
	s.mu.Unlock()
	notify(regs, changed)
	l.Connected(true)
	r.mu.Unlock()

	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.regs = slices.DeleteFunc(slices.Clone(s.regs), func(x *reg) bool { return x == r })
			s.mu.Unlock()
			// Writers may hold a snapshot that still lists r: they skip it
			// once stopped is set, and setting it waits for running calls.
			r.mu.Lock()
			r.stopped = true
			r.mu.Unlock()
		})
	}, nil
}

// reg is one Notify registration.
type reg struct {
	prefix  string
	l       store.Listener
	mu      sync.RWMutex // held shared while calling l, exclusively to stop
	stopped bool
}

// unlockAndNotify releases s.mu, then tells the listeners registered
// while it was held about changed.
func (s *Store) unlockAndNotify(changed []string) {
	regs := s.regs
	s.mu.Unlock()
	notify(regs, changed)
}

func notify(regs []*reg, changed []string) {
	if len(changed) == 0 {
		return
	}
	for _, r := range regs {
		r.mu.RLock()
		if !r.stopped {
			for _, k := range changed {
				if strings.HasPrefix(k, r.prefix) {
					r.l.Changed(k)
				}
			}
		}
		r.mu.RUnlock()
	}
}
