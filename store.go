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
//     whether it did. It must also report true when key already holds
//     exactly value: a call retried after its reply was lost (go-redis
//     retries on its own) then still says it won, instead of leaving the
//     cache waiting on its own lease. The cache's leases are unique, so
//     this never lets two flights hold one.
//   - Delete of a missing key is not an error.
//   - A call on a done context returns promptly with an error matching
//     ctx.Err().
//
// Keys and values are arbitrary bytes; keys are at most a few hundred
// bytes (see [MaxKeyLen]). Optional capabilities a store may add (leases
// fenced by compare-and-swap, change notifications, batches, limits) are
// in package store, with what a store without each one loses.
//
// [memstore]: https://pkg.go.dev/github.com/readthrough-go/readthrough/memstore
// [storetest.Run]: https://pkg.go.dev/github.com/readthrough-go/readthrough/storetest#Run
type Store interface {
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (stored bool, err error)
	Delete(ctx context.Context, key string) error
}
