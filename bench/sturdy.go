package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/viccon/sturdyc"
)

// SturdyStorage is sturdyc.DistributedStorage over go-redis: GET, SET,
// MGET, and a pipeline of SETs. sturdyc leaves expiry to the storage, so
// every write carries TTL. The interface has no errors: they are counted
// and otherwise dropped, as a sturdyc user's adapter would have to.
type SturdyStorage struct {
	Redis  redis.UniversalClient
	TTL    time.Duration
	errors atomic.Uint64
}

var _ sturdyc.DistributedStorage = (*SturdyStorage)(nil)

// Errors returns how many Redis calls failed (a miss is not a failure).
func (s *SturdyStorage) Errors() uint64 { return s.errors.Load() }

func (s *SturdyStorage) failed(err error) bool {
	if err != nil && !errors.Is(err, redis.Nil) {
		s.errors.Add(1)
	}
	return err != nil
}

// Get implements sturdyc.DistributedStorage.
func (s *SturdyStorage) Get(ctx context.Context, key string) ([]byte, bool) {
	b, err := s.Redis.Get(ctx, key).Bytes()
	if s.failed(err) {
		return nil, false
	}
	return b, true
}

// Set implements sturdyc.DistributedStorage.
func (s *SturdyStorage) Set(ctx context.Context, key string, value []byte) {
	s.failed(s.Redis.Set(ctx, key, value, s.TTL).Err())
}

// GetBatch implements sturdyc.DistributedStorage.
func (s *SturdyStorage) GetBatch(ctx context.Context, keys []string) map[string][]byte {
	out := make(map[string][]byte, len(keys))
	vals, err := s.Redis.MGet(ctx, keys...).Result()
	if s.failed(err) {
		return out
	}
	for i, v := range vals {
		if str, ok := v.(string); ok {
			out[keys[i]] = []byte(str)
		}
	}
	return out
}

// SetBatch implements sturdyc.DistributedStorage.
func (s *SturdyStorage) SetBatch(ctx context.Context, records map[string][]byte) {
	_, err := s.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, v := range records {
			p.Set(ctx, k, v, s.TTL)
		}
		return nil
	})
	s.failed(err)
}
