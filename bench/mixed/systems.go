package mixed

import (
	"context"
	"strconv"
	"time"

	rediscache "github.com/go-redis/cache/v9"
	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/bench"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/redis/go-redis/v9"
	"github.com/viccon/sturdyc"
)

// A System is one contender as one worker process sees it: a cache in
// front of the loader, sharing one redis-server with the other processes.
type System interface {
	// Get returns key's value, calling load when the system decides to.
	// It is called from many goroutines at once.
	Get(ctx context.Context, key int, load Loader) (Value, error)
	// Close releases what New built; the harness closes Env.Redis after it.
	Close() error
}

// storeErrorCounter is implemented by systems that swallow store errors
// (serving from the loader instead); the report shows them if any.
type storeErrorCounter interface{ StoreErrors() uint64 }

// Loader is the upstream: it takes Config.LoadLatency and returns a fresh
// Value stamped with its load time.
type Loader func(ctx context.Context, key int) (Value, error)

// Env is what a Contender's New gets in each worker process.
type Env struct {
	// Redis is a client for the shared server, built the same way for
	// every system (PoolSize Env.PoolSize, ContextTimeoutEnabled). A
	// system that needs other client options builds its own from Addr
	// and closes it in Close.
	Redis *redis.Client
	// Hook counts round trips to Redis; add it (AddHook) to any client a
	// system builds itself, or the report leaves that client's out.
	Hook     redis.Hook
	Addr     string // the server's address
	PoolSize int    // the client's pool size: 2 × goroutines + 8
	// Namespace is unique to the run: every Redis key a system writes
	// should start with it.
	Namespace string
	// TTL is how long a loaded value may be served.
	TTL time.Duration
	// Keys is the number of distinct keys (0 to Keys-1): a size for an
	// in-process cache that holds them all, so no system loses to evictions.
	Keys int
}

// A Contender names a system and builds it.
type Contender struct {
	Name string
	Note string // one line for the report: what sits where
	// New builds the system in a worker. Nil means not available yet:
	// Run skips it unless asked for it by name, and then fails.
	New func(Env) (System, error)
}

// Readthrough is the contender the others are compared with.
const Readthrough = "readthrough"

// Contenders lists every system the harness knows, readthrough first.
func Contenders() []Contender {
	return []Contender{
		{Readthrough, "readthrough on redisstore: every call reads Redis", func(env Env) (System, error) {
			return newReadthrough(env, nil)
		}},
		{"readthrough+near", "readthrough with its near cache (MaxEntries = the key count): in-process copies in front of redisstore", newReadthroughNear},
		{"readthrough+near+early", "readthrough+near with early refresh (EarlyRefresh β = 1): hot keys reloaded in the background before they expire, never served past their TTL", func(env Env) (System, error) {
			return newReadthrough(env, func(o *readthrough.Options[int, Value]) {
				o.Near = readthrough.NearOptions{MaxEntries: env.Keys}
				o.EarlyRefresh = 1
			})
		}},
		{"sturdyc", "sturdyc, distributed storage on Redis (GET/SET), its in-process cache as it comes", newSturdyc},
		{"go-redis/cache local", "go-redis/cache Once, local TinyLFU in front of Redis", func(env Env) (System, error) {
			return newGoRedisCache(env, true), nil
		}},
		{"go-redis/cache", "go-redis/cache Once on Redis alone", func(env Env) (System, error) {
			return newGoRedisCache(env, false), nil
		}},
	}
}

// --- readthrough

type rtSystem struct {
	c *readthrough.Cache[int, Value]
}

// newReadthrough builds readthrough on redisstore; tweak, when not nil,
// changes the options first (the near cache is one tweak away).
func newReadthrough(env Env, tweak func(*readthrough.Options[int, Value])) (System, error) {
	opts := &readthrough.Options[int, Value]{Namespace: env.Namespace, TTL: env.TTL}
	if tweak != nil {
		tweak(opts)
	}
	c, err := readthrough.New[int, Value](redisstore.New(env.Redis), opts)
	if err != nil {
		return nil, err
	}
	return rtSystem{c}, nil
}

func (s rtSystem) Get(ctx context.Context, key int, load Loader) (Value, error) {
	return s.c.GetOrLoad(ctx, key, readthrough.Loader[int, Value](load))
}

func (s rtSystem) Close() error { return s.c.Close() }

func (s rtSystem) StoreErrors() uint64 { return s.c.Stats().StoreErrors }

// --- sturdyc

type sturdySystem struct {
	c      *sturdyc.Client[Value]
	st     *bench.SturdyStorage
	prefix string
}

func newSturdyc(env Env) (System, error) {
	st := &bench.SturdyStorage{Redis: env.Redis, TTL: env.TTL}
	// Capacity twice the key count: sturdyc splits it over shards, and a
	// shard that overflows evicts, which is not what is measured here.
	c := sturdyc.New[Value](2*env.Keys, 8, env.TTL, 10, sturdyc.WithDistributedStorage(st))
	return sturdySystem{c: c, st: st, prefix: env.Namespace + ":"}, nil
}

func (s sturdySystem) Get(ctx context.Context, key int, load Loader) (Value, error) {
	return sturdyc.GetOrFetch(ctx, s.c, s.prefix+strconv.Itoa(key), func(ctx context.Context) (Value, error) {
		return load(ctx, key)
	})
}

// Close does nothing: sturdyc's eviction goroutine cannot be stopped, and
// the worker process ends soon after.
func (s sturdySystem) Close() error { return nil }

func (s sturdySystem) StoreErrors() uint64 { return s.st.Errors() }

// --- go-redis/cache

type goRedisCacheSystem struct {
	c      *rediscache.Cache
	prefix string
	ttl    time.Duration
}

func newGoRedisCache(env Env, local bool) System {
	opts := &rediscache.Options{Redis: env.Redis}
	if local {
		opts.LocalCache = rediscache.NewTinyLFU(2*env.Keys, env.TTL)
	}
	return goRedisCacheSystem{c: rediscache.New(opts), prefix: env.Namespace + ":", ttl: env.TTL}
}

func (s goRedisCacheSystem) Get(ctx context.Context, key int, load Loader) (Value, error) {
	var v Value
	err := s.c.Once(&rediscache.Item{Ctx: ctx, Key: s.prefix + strconv.Itoa(key), Value: &v, TTL: s.ttl,
		Do: func(*rediscache.Item) (any, error) { return load(ctx, key) }})
	return v, err
}

func (s goRedisCacheSystem) Close() error { return nil }
