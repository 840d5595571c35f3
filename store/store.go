// Package store is the API for authors of a [readthrough.Store]: the
// optional capabilities a store may implement beyond the four methods of
// the Store interface, and what the cache does with each.
//
// Users of readthrough never import this package: they pass a store to
// [readthrough.New]. A store author implements the capabilities their
// backend can offer, and checks them with [storetest.Run], which probes
// each one.
//
// The cache finds a capability by type assertion, as io.Copy finds
// io.WriterTo. A store that wraps another (to count calls, inject faults
// or trace) should implement every capability and forward it; when the
// wrapped store lacks one, the wrapper's method returns an error matching
// [errors.ErrUnsupported] and the cache carries on as if the capability
// were absent. [storetest.FaultyStore] does exactly this.
//
// What a store without a capability loses:
//
//   - [CompareAndSwapper]: fenced writes. Without it, the cache checks a
//     key's lease and then writes, in two steps, so a write by another
//     process that lands between them can be overwritten by an older
//     load; a lease cannot be kept alive owner-safely either, so a load
//     longer than Lock.TTL may run in two processes.
//   - [GetOrSetter]: nothing in correctness; a miss costs one more round
//     trip (Get, then SetIfAbsent).
//   - [CompareAndDeleter]: a lease released after a failed load is
//     deleted only after a check, in two steps.
//   - [Notifier]: processes waiting on another's load poll the store
//     instead of being told, and near-cache copies live at most
//     NearOptions.MaxAge after another writer's change.
//   - [Batcher]: a batch costs one round trip per key instead of a few
//     per batch.
//   - [Limiter]: limits are discovered on every write instead of at New.
//
// [readthrough.Store]: https://pkg.go.dev/github.com/readthrough-go/readthrough#Store
// [readthrough.New]: https://pkg.go.dev/github.com/readthrough-go/readthrough#New
// [storetest.Run]: https://pkg.go.dev/github.com/readthrough-go/readthrough/storetest#Run
// [storetest.FaultyStore]: https://pkg.go.dev/github.com/readthrough-go/readthrough/storetest#FaultyStore
package store

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// ErrTooLarge is what a store returns, wrapped, for an entry above what it
// can hold. The cache counts such a write as oversize, not as a store
// failure: the caller still gets its value, and the store is not suspected
// of being down.
var ErrTooLarge = errors.New("readthrough: entry too large for the store")

// CompareAndSwapper writes a key only while it holds what the writer last
// saw. The cache uses it for leases: a load's result is written back only
// if the key still holds the lease the load was given, so a Set, a Delete,
// or any other writer's change made during the load wins; and a lease is
// kept alive by swapping it for itself with a new TTL.
type CompareAndSwapper interface {
	// CompareAndSwap stores value under key with ttl only if key holds
	// exactly old, atomically with respect to every other client of the
	// store, and reports whether it did. A key that holds nothing, or has
	// expired, never matches.
	//
	// A store may also report true when key already holds exactly value,
	// so a call retried after its reply was lost stays idempotent; the
	// cache's values are unique (a lease token, a write time), so this
	// never lets a stale writer win. When old and value are equal, a swap
	// still applies ttl: that is how the cache keeps a lease alive.
	CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (swapped bool, err error)
}

// GetOrSetter reads a key and, if it holds nothing, stores a value, in one
// atomic step and one round trip. The cache calls it on every read of a
// store that has it, with a fresh lease as value: a hit costs one round
// trip, and a miss comes back already leased, so an uncontended miss costs
// two (this, then the CompareAndSwap of the loaded entry).
//
// Implement it only where a round trip is expensive: on an in-process
// store a plain Get is cheaper on hits.
type GetOrSetter interface {
	// GetOrSet stores value under key with ttl if key holds nothing, and
	// reports stored == true. Otherwise it returns the bytes key holds
	// (owned by the caller) and stored == false. Like SetIfAbsent, it must
	// report stored == true when key already holds exactly value (a retry
	// whose first reply was lost).
	GetOrSet(ctx context.Context, key string, value []byte, ttl time.Duration) (current []byte, stored bool, err error)
}

// CompareAndDeleter deletes a key only while it holds a given value,
// atomically. The cache releases a lease it no longer needs (a load that
// failed) with it, so a lease that expired and was taken by another
// process is never released by the first.
//
// A store with no native conditional delete may instead make the key
// expire within its shortest TTL.
type CompareAndDeleter interface {
	CompareAndDelete(ctx context.Context, key string, value []byte) (deleted bool, err error)
}

// Notifier tells the cache when keys change, whoever changed them: this
// process, another process, or a writer that is not a readthrough cache at
// all. The cache uses it to evict its near-cache copies the moment another
// writer changes a key, and to wake processes waiting on another's load
// the moment its value lands.
type Notifier interface {
	// Notify starts telling l about changes to keys that start with
	// prefix (every key when prefix is empty), and returns a function
	// that stops it; stop waits until no call to l is running, and calls
	// none after it returns. A store may be told several prefixes, by
	// several caches; they may overlap.
	//
	// Notify returns at once: a remote store may connect in the
	// background and report Connected when it has. An error means the
	// store cannot notify at all (errors.ErrUnsupported for a wrapper of a
	// store that cannot).
	Notify(prefix string, l Listener) (stop func(), err error)
}

// Listener receives what a [Notifier] tells. Its methods are called from
// the store's own goroutines, possibly concurrently, possibly with the
// store's locks held: they must return quickly, must not call the store,
// and must not call the stop function Notify returned (it waits for them).
//
// The promise a Notifier makes is this: between a call to Connected and
// the next call to Disconnected, every change to a key under the prefix
// is reported by Changed, soon after it happens; and a change that may
// have gone unreported is always followed by Disconnected, as soon as the
// store can know. In-process stores report a change before the call that
// made it returns.
type Listener interface {
	// Connected says that from now on changes are reported, until
	// Disconnected. complete says whether every writer's changes are
	// (Redis server-assisted tracking, an in-process store), or only those
	// made through stores that publish them (Momento topics, where a
	// writer that is not a readthrough store publishes nothing): with
	// complete false the cache still bounds near copies by
	// NearOptions.MaxAge.
	Connected(complete bool)
	// Changed says key was written, deleted, expired or evicted.
	Changed(key string)
	// Disconnected says changes may go unreported (the link was lost,
	// the server restarted or failed over) until the next Connected. err
	// says why.
	Disconnected(err error)
}

// Batcher runs many single-key operations in one round trip (a pipeline,
// a batch RPC). Each operation is atomic on its own; the batch as a whole
// is not, and operations on the same key in one batch may run in any
// order (the cache never puts two on one key). A client may send a batch
// again after a lost reply, so each operation must be safe to run twice,
// as the single-key methods are.
type Batcher interface {
	// Batch runs ops, filling each one's results. It must support the
	// kinds Get, Set, SetIfAbsent and Delete, and GetOrSet and
	// CompareAndSwap when the store implements [GetOrSetter] and
	// [CompareAndSwapper]; for other kinds it sets the op's Err to an
	// error matching errors.ErrUnsupported. An error from Batch itself
	// means no op's result can be trusted; otherwise each op carries its
	// own.
	Batch(ctx context.Context, ops []Op) error
}

// OpKind names a single-key operation in a [Batcher] batch.
type OpKind uint8

// The operations a batch can hold, with the meaning of the single-key
// method of the same name.
const (
	OpGet OpKind = iota + 1
	OpSet
	OpSetIfAbsent
	OpGetOrSet
	OpCompareAndSwap
	OpDelete
)

// String names the kind, as the method it stands for.
func (k OpKind) String() string {
	switch k {
	case OpGet:
		return "Get"
	case OpSet:
		return "Set"
	case OpSetIfAbsent:
		return "SetIfAbsent"
	case OpGetOrSet:
		return "GetOrSet"
	case OpCompareAndSwap:
		return "CompareAndSwap"
	case OpDelete:
		return "Delete"
	}
	return "OpKind(" + strconv.Itoa(int(k)) + ")"
}

// Op is one operation of a batch: what to do, and, once [Batcher.Batch]
// returns, what came of it.
type Op struct {
	Kind  OpKind
	Key   string
	Value []byte        // Set, SetIfAbsent, GetOrSet, CompareAndSwap: the bytes to store
	Old   []byte        // CompareAndSwap: the bytes key must hold
	TTL   time.Duration // Set, SetIfAbsent, GetOrSet, CompareAndSwap

	// Filled by Batch.
	Result []byte // Get, GetOrSet: the bytes key holds, owned by the caller (nil when absent, or when GetOrSet stored)
	OK     bool   // Get: found; SetIfAbsent, GetOrSet: stored; CompareAndSwap: swapped
	Err    error  // this operation's failure
}

// Limits describes what a store can hold. Zero fields mean no limit.
type Limits struct {
	// MaxTTL is the longest TTL the store accepts.
	MaxTTL time.Duration
	// TTLGranularity is the store's unit of time: a TTL that is not a
	// multiple of it is rounded up.
	TTLGranularity time.Duration
	// MaxEntrySize is the largest entry, key and value together in bytes,
	// the store accepts. A larger entry is not cached (counted as
	// oversize) and the caller still gets its value.
	MaxEntrySize int
}

// Limiter declares a store's limits, so readthrough.New rejects options
// the store could never honour (a TTL above MaxTTL) up front, instead of
// failing on every write.
type Limiter interface {
	Limits() Limits
}

// Bounded is a promise that every method returns promptly (within a few
// milliseconds) once its ctx is done, whatever the backend does: a hung
// server, a blackholed connection. The cache calls such a store directly;
// any other store that can block is called on a goroutine of the cache's,
// which it abandons at the call's deadline (a goroutine and a channel per
// call). redisstore and momentostore are Bounded; a wrapper that can delay
// calls while ignoring ctx must not claim it.
type Bounded interface {
	Bounded()
}

// NonBlocking is a promise that no operation ever waits on I/O or on
// another process: an in-process map, such as memstore. The cache calls
// such a store without a per-call timeout (a context and a timer saved on
// every hit) and writes loaded values before returning them, instead of in
// the background.
type NonBlocking interface {
	NonBlocking()
}
