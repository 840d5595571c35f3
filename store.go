package readthrough

import (
	"context"
	"time"
)

// Store is the byte-level cache a [Cache] reads through: a remote cache
// such as Redis or Momento, or the in-process [memstore].
//
// The contract, checked by [storetest.Run]:
//   - All methods are safe for concurrent use.
//   - A missing or expired key is a miss: Get returns ok == false and a
//     nil error. An error means the store could not answer.
//   - The slice Get returns belongs to the caller; the slice Set is given
//     may be reused by the caller once Set returns.
//   - ttl is always positive. Entries expire after ttl, to the store's
//     granularity; a ttl the store cannot honour is an error, never
//     "no expiry".
//   - SetIfAbsent stores value only if key holds nothing, atomically
//     with respect to every other client of the store, and reports
//     whether it did. A store may also report true when key already holds
//     exactly value, so a retried call stays idempotent; the cache's lock
//     tokens are unique, so this never lets two flights hold one lock.
//   - Delete of a missing key is not an error.
//   - A call on a done context returns promptly with an error matching
//     ctx.Err().
//
// Keys and values are arbitrary bytes; keys are at most a few hundred
// bytes (see [MaxKeyLen]).
//
// [memstore]: https://pkg.go.dev/github.com/readthrough-go/readthrough/memstore
// [storetest.Run]: https://pkg.go.dev/github.com/readthrough-go/readthrough/storetest#Run
type Store interface {
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (stored bool, err error)
	Delete(ctx context.Context, key string) error
}

// CompareAndDeleter is an optional [Store] capability: delete key only if
// it still holds value, atomically. A store with no native conditional
// delete may instead make the key expire within its shortest TTL. The cache releases its distributed
// locks with it, so a lock that expired and was taken by another process
// is never released by the first. Without it the cache falls back to
// Delete. An implementation that wraps another store and finds the
// wrapped one lacks the capability returns an error matching
// [errors.ErrUnsupported], and the cache falls back to Delete too.
type CompareAndDeleter interface {
	CompareAndDelete(ctx context.Context, key string, value []byte) (deleted bool, err error)
}

// Limits describes what a store can hold. Zero fields mean no limit.
type Limits struct {
	// MaxTTL is the longest TTL the store accepts.
	MaxTTL time.Duration
	// TTLGranularity is the store's unit of time: a TTL that is not a
	// multiple of it is rounded up.
	TTLGranularity time.Duration
	// MaxValueSize is the largest value, in bytes, the store accepts. A
	// larger entry is not cached (counted in [Stats].Oversize) and the
	// caller still gets its value.
	MaxValueSize int
}

// Limiter is an optional [Store] capability: a store that declares its
// limits lets [New] reject options it could never honour (a TTL above
// MaxTTL) up front, instead of failing on every write.
type Limiter interface {
	Limits() Limits
}

// NonBlocking is an optional [Store] capability, a promise that no
// operation ever waits on I/O or on another process: an in-process map,
// such as memstore. The cache calls such a store without bounding each
// call by [Options].StoreTimeout, since the timer and context would cost
// more than the call. A wrapper that can delay calls must not claim it.
type NonBlocking interface {
	NonBlocking()
}
