package momentostore_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/momentohq/client-sdk-go/momento"
	"github.com/momentohq/client-sdk-go/responses"
)

// fakeClient is an in-memory momento.CacheClient with TTLs, for the
// operations momentostore uses. The embedded interface is nil: any other
// method panics, which shows the store calls nothing else.
type fakeClient struct {
	momento.CacheClient

	mu     sync.Mutex
	caches map[string]map[string]fakeItem
	fail   map[string]error // by operation name: the next calls fail with it
	ttls   map[string]time.Duration
}

type fakeItem struct {
	value   []byte
	expires time.Time
}

func newFake(caches ...string) *fakeClient {
	f := &fakeClient{caches: map[string]map[string]fakeItem{}, fail: map[string]error{}, ttls: map[string]time.Duration{}}
	for _, c := range caches {
		f.caches[c] = map[string]fakeItem{}
	}
	return f
}

func (f *fakeClient) failWith(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op] = err
}

// lastTTL returns the TTL of the last write to key, as the service saw it.
func (f *fakeClient) lastTTL(key string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ttls[key]
}

func raw(v momento.Value) string {
	switch v := v.(type) {
	case momento.String:
		return string(v)
	case momento.Bytes:
		return string(v)
	}
	panic(fmt.Sprintf("unexpected value type %T", v))
}

// enter checks the context, injected failures and the cache, with f.mu held.
func (f *fakeClient) enter(ctx context.Context, op, cache string) (map[string]fakeItem, error) {
	if ctx.Err() != nil {
		return nil, momento.NewMomentoError(momento.CanceledError, "context done", ctx.Err())
	}
	if err := f.fail[op]; err != nil {
		return nil, err
	}
	items, ok := f.caches[cache]
	if !ok {
		return nil, momento.NewMomentoError(momento.CacheNotFoundError, "cache not found: "+cache, nil)
	}
	return items, nil
}

func (f *fakeClient) live(items map[string]fakeItem, key string) (fakeItem, bool) {
	it, ok := items[key]
	if ok && !time.Now().Before(it.expires) {
		delete(items, key)
		return fakeItem{}, false
	}
	return it, ok
}

func (f *fakeClient) put(items map[string]fakeItem, key string, value momento.Value, ttl time.Duration) error {
	// The SDK sends whole milliseconds and would use its default for zero:
	// the store must never rely on either.
	if ttl <= 0 || ttl%time.Millisecond != 0 {
		return momento.NewMomentoError(momento.InvalidArgumentError, fmt.Sprintf("bad ttl %v", ttl), nil)
	}
	f.ttls[key] = ttl
	items[key] = fakeItem{value: []byte(raw(value)), expires: time.Now().Add(ttl)}
	return nil
}

func (f *fakeClient) CreateCache(ctx context.Context, r *momento.CreateCacheRequest) (responses.CreateCacheResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["CreateCache"]; err != nil {
		return nil, err
	}
	if _, ok := f.caches[r.CacheName]; ok {
		return &responses.CreateCacheAlreadyExists{}, nil
	}
	f.caches[r.CacheName] = map[string]fakeItem{}
	return &responses.CreateCacheSuccess{}, nil
}

func (f *fakeClient) Get(ctx context.Context, r *momento.GetRequest) (responses.GetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	items, err := f.enter(ctx, "Get", r.CacheName)
	if err != nil {
		return nil, err
	}
	if it, ok := f.live(items, raw(r.Key)); ok {
		return responses.NewGetHit(append([]byte(nil), it.value...)), nil
	}
	return &responses.GetMiss{}, nil
}

func (f *fakeClient) Set(ctx context.Context, r *momento.SetRequest) (responses.SetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	items, err := f.enter(ctx, "Set", r.CacheName)
	if err != nil {
		return nil, err
	}
	if err := f.put(items, raw(r.Key), r.Value, r.Ttl); err != nil {
		return nil, err
	}
	return &responses.SetSuccess{}, nil
}

func (f *fakeClient) SetIfAbsentOrEqual(ctx context.Context, r *momento.SetIfAbsentOrEqualRequest) (responses.SetIfAbsentOrEqualResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	items, err := f.enter(ctx, "SetIfAbsentOrEqual", r.CacheName)
	if err != nil {
		return nil, err
	}
	if it, ok := f.live(items, raw(r.Key)); ok && string(it.value) != raw(r.Equal) {
		return &responses.SetIfAbsentOrEqualNotStored{}, nil
	}
	if err := f.put(items, raw(r.Key), r.Value, r.Ttl); err != nil {
		return nil, err
	}
	return &responses.SetIfAbsentOrEqualStored{}, nil
}

func (f *fakeClient) SetIfEqual(ctx context.Context, r *momento.SetIfEqualRequest) (responses.SetIfEqualResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	items, err := f.enter(ctx, "SetIfEqual", r.CacheName)
	if err != nil {
		return nil, err
	}
	if it, ok := f.live(items, raw(r.Key)); !ok || string(it.value) != raw(r.Equal) {
		return &responses.SetIfEqualNotStored{}, nil
	}
	if err := f.put(items, raw(r.Key), r.Value, r.Ttl); err != nil {
		return nil, err
	}
	return &responses.SetIfEqualStored{}, nil
}

func (f *fakeClient) Delete(ctx context.Context, r *momento.DeleteRequest) (responses.DeleteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	items, err := f.enter(ctx, "Delete", r.CacheName)
	if err != nil {
		return nil, err
	}
	delete(items, raw(r.Key))
	return &responses.DeleteSuccess{}, nil
}

func (f *fakeClient) Close() {}
