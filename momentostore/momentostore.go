// Package momentostore puts a Momento cache behind [readthrough.Store],
// with the official Go SDK (github.com/momentohq/client-sdk-go).
//
//	store, err := momentostore.Open(ctx, "products", nil) // MOMENTO_API_KEY from the environment
//	if err != nil { ... }
//	defer store.Close()
//	products, err := readthrough.New[int, Product](store, &readthrough.Options[int, Product]{Namespace: "product"})
//
// [Open] takes its credentials from the environment, [Connect] from the
// caller; both make the clients, with consistent reads and topics, and
// create the cache if it is missing. [New] wraps a cache client of the
// caller's, and [NewWithTopics] adds topics to it.
//
// Operations: Get is Get (GetMiss is a miss), Set is Set with the entry's
// TTL, SetIfAbsent is SetIfAbsentOrEqual with the value as Equal, so a
// retried lock acquisition by the same flight reports true (the SDK never
// retries SetIf calls, but the cache may), and Delete is Delete.
//
// Capabilities ([store] describes what the cache does with each):
//   - [store.CompareAndSwapper]: SetIfEqual, one RPC, which also resets
//     the TTL. When old and new bytes together would not fit one gRPC
//     message (5,243,000 bytes), GetWithHash, a local comparison with old,
//     then SetIfPresentAndHashEqual, which sends only a hash. Momento's
//     UpdateTtl and IncreaseTtl do not check the value, so a lease is
//     kept alive by swapping it for itself with a new TTL instead.
//   - [store.CompareAndDeleter]: Momento has no conditional delete, so the
//     key is swapped for itself with a 1 ms TTL, only while it holds the
//     value: it is gone a millisecond later.
//   - [store.Batcher]: Gets in one GetBatch, Sets in one SetBatch per TTL,
//     the other kinds as single calls run concurrently.
//   - [store.Notifier]: Momento Topics, best effort (see [Store.Notify]).
//   - [store.Limiter]: a TTL above 24 hours is rejected by readthrough.New
//     up front, and an entry (key and value) above 5,000,000 bytes is not
//     cached (counted in Stats.Oversize) while the caller still gets its
//     value. TTLs are whole milliseconds, rounded up.
//
// There is no [store.GetOrSetter]: Momento has no atomic get-or-set, so
// the cache reads, then calls SetIfAbsent on a miss.
//
// A SetIf whose reply is lost (a timeout) is not retried by the SDK, so
// its outcome is unknown: the store reports the error, and the cache lets
// the lease it was writing expire.
package momentostore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/momentohq/client-sdk-go/auth"
	"github.com/momentohq/client-sdk-go/config"
	"github.com/momentohq/client-sdk-go/config/logger"
	"github.com/momentohq/client-sdk-go/momento"
	"github.com/momentohq/client-sdk-go/responses"
	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/store"
)

var (
	_ readthrough.Store       = (*Store)(nil)
	_ store.CompareAndSwapper = (*Store)(nil)
	_ store.CompareAndDeleter = (*Store)(nil)
	_ store.Batcher           = (*Store)(nil)
	_ store.Notifier          = (*Store)(nil)
	_ store.Limiter           = (*Store)(nil)
	_ store.Bounded           = (*Store)(nil)
)

// Momento's service limits, as the store declares them.
const (
	MaxTTL       = 24 * time.Hour
	MaxEntrySize = 5_000_000 // bytes of key and value: Momento's default item size limit

	// maxMessage is the largest gRPC message the SDK sends or receives,
	// and the service accepts: a request that carries two values (old
	// and new) must fit in it.
	maxMessage = 5_243_000
)

// Topic is the Momento topic, in the store's cache, where stores publish
// the keys they write (see [Store.Notify]). Topics are scoped by cache, so
// one name serves every cache.
const Topic = "readthrough-changes"

// Errors a Store returns. Each wraps the SDK's MomentoError when there is
// one (use errors.As to reach it). readthrough turns all of them into
// fail-open: the loader serves the call.
var (
	// ErrCacheNotFound: the named cache does not exist. Create it in the
	// console or CLI, or use [Open], which creates it.
	ErrCacheNotFound = errors.New("momentostore: cache not found")
	// ErrUnavailable: the service could not answer in time (timeout,
	// unavailable, refused connection, internal error). Usually transient.
	ErrUnavailable = errors.New("momentostore: service unavailable")
	// ErrLimitExceeded: a request rate, bandwidth or item size limit of
	// the account was exceeded.
	ErrLimitExceeded = errors.New("momentostore: limit exceeded")
	// ErrAuth: the API key is invalid or lacks permission for the cache.
	ErrAuth = errors.New("momentostore: authentication or permission denied")
	// ErrTTL: a TTL Momento cannot honour (not positive, or above MaxTTL).
	ErrTTL = errors.New("momentostore: ttl out of range")
	// ErrTooLarge: an entry above MaxEntrySize, refused before it is sent.
	// It wraps store.ErrTooLarge, so the cache counts it as oversize.
	ErrTooLarge = fmt.Errorf("momentostore: entry too large: %w", store.ErrTooLarge)
)

// Store is a [readthrough.Store] over a Momento cache. It is safe for
// concurrent use, as the clients are.
type Store struct {
	client    momento.CacheClient
	cacheName string
	owned     bool // Open or Connect made the cache client, so Close closes it

	// topics, when not nil, publishes the keys this store writes and
	// carries Notify's subscription. The store always makes it itself, so
	// that its retry strategy is the store's (see resubscribe).
	topics momento.TopicClient
	id     [8]byte // this store's mark on what it publishes, to skip its echo
	pub    publisher
	notify notifier

	closeOnce sync.Once
}

// New returns a Store on the cache named cacheName, through client. The
// cache must exist. The store has no topic client: it publishes nothing
// and its Notify reports errors.ErrUnsupported (see [NewWithTopics]).
//
// Give the client consistent reads:
//
//	config.InRegionLatest().WithReadConcern(config.CONSISTENT)
//
// With BALANCED reads (the SDK's default) a Get may be served by a replica
// that has not seen the latest write yet, so processes waiting on
// another's load can miss the value that just landed and load it
// themselves: under replica lag, 2 or 3 loads per key instead of 1.
// GetBatch sends no read concern at all, which is why the cache uses
// batches only for value reads, never to poll a lock or a lease.
func New(client momento.CacheClient, cacheName string) *Store {
	s := &Store{client: client, cacheName: cacheName}
	s.init()
	return s
}

// NewWithTopics is [New] with Momento Topics: the store makes a topic
// client from creds and topicsConfig (nil means config.TopicsDefault with
// a no-op logger), publishes every key it writes, and implements Notify.
// The store replaces the configuration's retry strategy with its own, and
// closes the topic client on Close (the cache client stays the caller's).
//
// Through SDK v1.40.1, WithRetryStrategy drops a configuration's
// MaxSubscriptions; the store needs one subscription.
func NewWithTopics(client momento.CacheClient, cacheName string, creds auth.CredentialProvider, topicsConfig config.TopicsConfiguration) (*Store, error) {
	s := New(client, cacheName)
	if err := s.openTopics(creds, topicsConfig, nil); err != nil {
		return nil, err
	}
	return s, nil
}

// Options tune [Connect]. The zero value is what [Open] uses.
type Options struct {
	// LoggerFactory is the SDK's logger for the default configurations;
	// nil means none (a no-op logger), since readthrough already counts
	// store errors.
	LoggerFactory logger.MomentoLoggerFactory
	// Configuration is the cache client's. nil means
	// config.InRegionLatest with CONSISTENT reads; a configuration given
	// here should have them too (see [New] for why).
	Configuration config.Configuration
	// TopicsConfiguration is the topic client's; nil means
	// config.TopicsDefault. Its retry strategy is replaced, as in
	// [NewWithTopics].
	TopicsConfiguration config.TopicsConfiguration
	// NoTopics makes no topic client: writes are not published, and
	// Notify reports errors.ErrUnsupported, so near-cache copies live
	// NearOptions.MaxAge at most.
	NoTopics bool
}

// Open is the common case: credentials from the environment, in-region
// defaults with consistent reads, topics on, and the cache created if it
// is missing ([Connect] says how, and what ctx bounds).
//
// It reads the API key from MOMENTO_API_KEY; with MOMENTO_ENDPOINT set too
// it is taken as a v2 key for that endpoint, otherwise as a legacy key,
// which carries its endpoint. loggerFactory is the SDK's logger; nil means
// none. Close the Store to close its clients.
func Open(ctx context.Context, cacheName string, loggerFactory logger.MomentoLoggerFactory) (*Store, error) {
	var creds auth.CredentialProvider
	var err error
	if os.Getenv("MOMENTO_ENDPOINT") != "" {
		creds, err = auth.FromEnvironmentVariablesV2()
	} else {
		// A legacy key carries its endpoint; the SDK deprecates the call
		// but such keys are still issued and in use.
		creds, err = auth.FromEnvironmentVariable("MOMENTO_API_KEY") //lint:ignore SA1019 legacy keys
	}
	if err != nil {
		return nil, fmt.Errorf("momentostore: credentials from MOMENTO_API_KEY: %w", err)
	}
	return Connect(ctx, cacheName, creds, &Options{LoggerFactory: loggerFactory})
}

// maxEagerConnect is the SDK's own eager-connection timeout, the most
// Connect lets it wait.
const maxEagerConnect = 30 * time.Second

// probeKey is the key Connect reads to learn whether the cache exists.
const probeKey = "readthrough:probe"

// Connect makes the clients from creds and opts (nil means the zero
// Options), connects, and returns a Store that closes them on Close.
//
// ctx bounds it all: the SDK's eager connection waits at most until ctx's
// deadline (and 30 s, the SDK's default), and Connect returns ctx's error
// once ctx ends. A refused or failed connection returns an error matching
// [ErrUnavailable].
//
// To learn whether the cache exists, Connect reads a key on the data
// plane, and calls CreateCache only when the answer is "cache not found":
// the control plane allows only a few calls per second per region, so a
// fleet that starts together must not call it on every start.
func Connect(ctx context.Context, cacheName string, creds auth.CredentialProvider, opts *Options) (*Store, error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("momentostore: connect: %w", err)
	}
	lf := opts.LoggerFactory
	if lf == nil {
		lf = logger.NewNoopMomentoLoggerFactory()
	}
	cfg := opts.Configuration
	if cfg == nil {
		cfg = config.InRegionLatestWithLogger(lf).WithReadConcern(config.CONSISTENT)
	}

	// The SDK's eager connection ignores ctx, so give it the time left on
	// ctx. Without a deadline there is no eager connection: the probe
	// below connects, and it honours ctx.
	var eager time.Duration
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		eager = min(time.Until(deadline), maxEagerConnect)
		if eager <= 0 {
			<-ctx.Done()
			return nil, fmt.Errorf("momentostore: connect: %w", ctx.Err())
		}
	}
	// The default TTL is never used: every write carries its own.
	client, err := momento.NewCacheClientWithEagerConnectTimeout(cfg, creds, time.Minute, eager)
	if err != nil {
		if hasDeadline && !time.Now().Before(deadline) {
			<-ctx.Done() // due now: the SDK's timer and ctx's ran out together
			return nil, fmt.Errorf("momentostore: connect: %w: %w", ctx.Err(), err)
		}
		return nil, mapError(ctx, "connect", err)
	}
	if err := probe(ctx, client, cacheName); err != nil {
		client.Close()
		return nil, err
	}
	s := &Store{client: client, cacheName: cacheName, owned: true}
	s.init()
	if !opts.NoTopics {
		if err := s.openTopics(creds, opts.TopicsConfiguration, lf); err != nil {
			client.Close()
			return nil, err
		}
	}
	return s, nil
}

// probe reads a key, and creates the cache only if the data plane says it
// does not exist. A read that times out (the first one may be slow to
// connect) is tried again while ctx lasts, for as long as the SDK's own
// eager connection would wait.
func probe(ctx context.Context, client momento.CacheClient, cacheName string) error {
	until := time.Now().Add(maxEagerConnect)
	for {
		_, err := client.Get(ctx, &momento.GetRequest{CacheName: cacheName, Key: momento.String(probeKey)})
		if err == nil {
			return nil
		}
		var me momento.MomentoError
		if errors.As(err, &me) && me.Code() == momento.TimeoutError && ctxErr(ctx) == nil && time.Now().Before(until) {
			continue
		}
		if err := mapError(ctx, "probe cache "+cacheName, err); !errors.Is(err, ErrCacheNotFound) {
			return err
		}
		break
	}
	resp, err := client.CreateCache(ctx, &momento.CreateCacheRequest{CacheName: cacheName})
	if err != nil {
		return mapError(ctx, "create cache "+cacheName, err)
	}
	switch resp.(type) {
	case *responses.CreateCacheSuccess, *responses.CreateCacheAlreadyExists:
		return nil
	}
	return fmt.Errorf("momentostore: create cache %s: unexpected response %T", cacheName, resp)
}

func (s *Store) init() {
	s.pub.s = s
	s.notify.s = s
	_, _ = rand.Read(s.id[:]) // never fails (crypto/rand)
}

// openTopics makes the store's topic client, with the store's retry
// strategy for its subscription.
func (s *Store) openTopics(creds auth.CredentialProvider, cfg config.TopicsConfiguration, lf logger.MomentoLoggerFactory) error {
	if cfg == nil {
		if lf == nil {
			lf = logger.NewNoopMomentoLoggerFactory()
		}
		// One subscription and one publisher need one channel each,
		// not the default four.
		cfg = config.TopicsDefaultWithLogger(lf).WithNumStreamGrpcChannels(1).WithNumUnaryGrpcChannels(1)
	}
	topics, err := momento.NewTopicClient(cfg.WithRetryStrategy(resubscribe{&s.notify}), creds)
	if err != nil {
		return mapError(context.Background(), "topic client", err)
	}
	s.topics = topics
	return nil
}

// Close ends Notify's subscription, publishes what is still pending
// (waiting up to a second), closes the topic client, and closes the cache
// client if [Open] or [Connect] made it: a client passed to [New] belongs
// to the caller. Close may be called more than once.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.notify.close()
		s.pub.close()
		s.closeTopics()
		if s.owned {
			s.client.Close()
		}
	})
}

// closeTopics closes the topic client, except under the race detector: in
// SDK v1.40.1, TopicClient.Close closes a channel that the SDK's own
// goroutine (its stream connection pool's) may be sending on, which the
// race detector always reports, and which panics if that goroutine is
// between two sends at the time. The store closes it only after its
// subscription has ended, when that goroutine is all but certainly
// parked, out of the panic's way; the report would still come, failing the race-enabled tests
// of every program that uses the store. Under the race detector, the
// client's connections are left open instead.
func (s *Store) closeTopics() {
	if s.topics != nil && !raceEnabled {
		s.topics.Close()
	}
}

// Limits implements [store.Limiter].
func (s *Store) Limits() store.Limits {
	return store.Limits{MaxTTL: MaxTTL, TTLGranularity: time.Millisecond, MaxEntrySize: MaxEntrySize}
}

// Bounded implements [store.Bounded]: the SDK runs every call under its ctx over gRPC, so readthrough calls it directly.
func (s *Store) Bounded() {}
