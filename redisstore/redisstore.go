// Package redisstore puts Redis or Valkey behind [readthrough.Store], with
// go-redis v9.
//
// Any [redis.UniversalClient] works unchanged: a single node
// (*redis.Client), a Cluster (*redis.ClusterClient) or a Sentinel
// failover client. Each operation touches one key, so keys may live in
// any cluster slot.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	products, err := readthrough.New[int, Product](redisstore.New(rdb), &readthrough.Options[int, Product]{
//		Namespace: "product",
//	})
//
// Commands: Get is GET (a nil reply is a miss), Set is SET with PX,
// SetIfAbsent is SET NX PX, Delete is DEL, and the owner-safe lock release
// is a compare-and-delete script run by EVALSHA (EVAL after a NOSCRIPT).
// TTLs are whole milliseconds, rounded up; below 1 ms is an error, never
// "no expiry".
package redisstore

import (
	"github.com/readthrough-go/readthrough/store"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/redis/go-redis/v9"
)

var (
	_ readthrough.Store             = (*Store)(nil)
	_ store.CompareAndDeleter = (*Store)(nil)
	_ store.Limiter           = (*Store)(nil)
)

// maxValueSize is Redis's default proto-max-bulk-len.
const maxValueSize = 512 << 20

// ErrTTL is returned for a TTL Redis cannot honour.
var ErrTTL = errors.New("redisstore: ttl below 1ms")

// compareAndDelete deletes KEYS[1] only while it holds ARGV[1]. go-redis
// runs it by EVALSHA and falls back to EVAL when the server answers
// NOSCRIPT (after a restart or a SCRIPT FLUSH).
var compareAndDelete = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// Store is a [readthrough.Store] over a go-redis client. Create it with
// [New]; it is safe for concurrent use, as the client is.
type Store struct {
	client redis.UniversalClient
}

// New returns a Store using client. The client's own timeouts and pool
// apply; readthrough bounds each call with its StoreTimeout too.
func New(client redis.UniversalClient) *Store {
	return &Store{client: client}
}

// Get implements [readthrough.Store]: GET, with a nil reply as a miss.
func (s *Store) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	b, err := s.client.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("redisstore: GET: %w", err)
	}
	return b, true, nil
}

// Set implements [readthrough.Store]: SET with a millisecond expiry.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ttl, err := roundTTL(ctx, ttl)
	if err != nil {
		return err
	}
	if err := s.client.Set(ctx, key, value, ttl).Err(); err != nil {
		return fmt.Errorf("redisstore: SET: %w", err)
	}
	return nil
}

// SetIfAbsent implements [readthrough.Store]: SET NX with a millisecond
// expiry.
func (s *Store) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ttl, err := roundTTL(ctx, ttl)
	if err != nil {
		return false, err
	}
	ok, err := s.client.SetNX(ctx, key, value, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("redisstore: SET NX: %w", err)
	}
	return ok, nil
}

// Delete implements [readthrough.Store]: DEL.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.client.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("redisstore: DEL: %w", err)
	}
	return nil
}

// CompareAndDelete implements [store.CompareAndDeleter] with a
// script, atomically on the server.
func (s *Store) CompareAndDelete(ctx context.Context, key string, value []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	n, err := compareAndDelete.Run(ctx, s.client, []string{key}, value).Int()
	if err != nil {
		return false, fmt.Errorf("redisstore: compare-and-delete: %w", err)
	}
	return n == 1, nil
}

// Limits implements [store.Limiter]: millisecond TTLs, and values up
// to Redis's default 512 MB.
func (s *Store) Limits() store.Limits {
	return store.Limits{TTLGranularity: time.Millisecond, MaxEntrySize: maxValueSize}
}

// roundTTL rounds ttl up to whole milliseconds, which is what PX takes.
func roundTTL(ctx context.Context, ttl time.Duration) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if ttl < time.Millisecond {
		return 0, fmt.Errorf("%w (got %v)", ErrTTL, ttl)
	}
	return (ttl + time.Millisecond - 1).Truncate(time.Millisecond), nil
}
