// Package momentostore puts a Momento cache behind [readthrough.Store],
// with the official Go SDK (github.com/momentohq/client-sdk-go).
//
//	store, err := momentostore.Open(ctx, "products", nil) // MOMENTO_API_KEY from the environment
//	if err != nil { ... }
//	defer store.Close()
//	products, err := readthrough.New[int, Product](store, &readthrough.Options[int, Product]{Namespace: "product"})
//
// Operations: Get is Get (GetMiss is a miss), Set is Set with the entry's
// TTL, SetIfAbsent is SetIfAbsentOrEqual with the value as Equal, so a
// retried lock acquisition by the same flight stays idempotent (the SDK
// does not retry SetIf calls), and Delete is Delete. Momento has no
// conditional delete, so the owner-safe lock release is SetIfEqual of the
// token to itself with a 1 ms TTL: the lock vanishes a millisecond later,
// and only while it still holds our token.
//
// Momento's limits are declared through [store.Limiter], so
// readthrough.New rejects a TTL above 24 hours up front, and an entry
// above 5 MB is not cached (counted in Stats.Oversize) while the caller
// still gets its value. TTLs are whole milliseconds, rounded up.
package momentostore

import (
	"github.com/readthrough-go/readthrough/store"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/momentohq/client-sdk-go/auth"
	"github.com/momentohq/client-sdk-go/config"
	"github.com/momentohq/client-sdk-go/config/logger"
	"github.com/momentohq/client-sdk-go/momento"
	"github.com/momentohq/client-sdk-go/responses"
	"github.com/readthrough-go/readthrough"
)

var (
	_ readthrough.Store             = (*Store)(nil)
	_ store.CompareAndDeleter = (*Store)(nil)
	_ store.Limiter           = (*Store)(nil)
)

// Momento's service limits, as the store declares them.
const (
	MaxTTL       = 24 * time.Hour
	MaxEntrySize = 5_000_000 // bytes: Momento's default item size limit
)

// Errors a Store returns, each wrapping the SDK's MomentoError (use
// errors.As to reach it). readthrough turns all of them into fail-open:
// the loader serves the call.
var (
	// ErrCacheNotFound: the named cache does not exist. Create it in the
	// console or CLI, or use [Open], which creates it.
	ErrCacheNotFound = errors.New("momentostore: cache not found")
	// ErrUnavailable: the service could not answer in time (timeout,
	// unavailable, connection, internal error). Usually transient.
	ErrUnavailable = errors.New("momentostore: service unavailable")
	// ErrLimitExceeded: a request rate, bandwidth or item size limit of
	// the account was exceeded.
	ErrLimitExceeded = errors.New("momentostore: limit exceeded")
	// ErrAuth: the API key is invalid or lacks permission for the cache.
	ErrAuth = errors.New("momentostore: authentication or permission denied")
	// ErrTTL: a TTL Momento cannot honour (below 1 ms or above 24 h).
	ErrTTL = errors.New("momentostore: ttl out of range")
	// ErrTooLarge: a value above MaxValueSize, refused before it is sent.
	ErrTooLarge = errors.New("momentostore: value too large")
)

// Store is a [readthrough.Store] over a Momento cache. It is safe for
// concurrent use, as the client is.
type Store struct {
	client    momento.CacheClient
	cacheName string
	owned     bool // Open made the client, so Close closes it
}

// New returns a Store on the cache named cacheName, through client. The
// cache must exist. For pollers to see a value as soon as it lands, give
// the client a configuration with consistent reads
// (config.InRegionLatest().WithReadConcern(config.CONSISTENT)).
func New(client momento.CacheClient, cacheName string) *Store {
	return &Store{client: client, cacheName: cacheName}
}

// Open is the common case: a client from the environment, in-region
// defaults with consistent reads, and the cache created if missing.
//
// It reads the API key from MOMENTO_API_KEY; with MOMENTO_ENDPOINT set too
// it is taken as a v2 key for that endpoint, otherwise as a legacy key,
// which carries its endpoint. loggerFactory is the SDK's logger; nil means
// none (a no-op logger), since readthrough already counts store errors.
// Close the Store to close the client.
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
	if loggerFactory == nil {
		loggerFactory = logger.NewNoopMomentoLoggerFactory()
	}
	cfg := config.InRegionLatestWithLogger(loggerFactory).WithReadConcern(config.CONSISTENT)
	// The default TTL is never used: every write carries its own.
	client, err := momento.NewCacheClient(cfg, creds, time.Minute)
	if err != nil {
		return nil, fmt.Errorf("momentostore: client: %w", err)
	}
	if err := ensureCache(ctx, client, cacheName); err != nil {
		client.Close()
		return nil, err
	}
	return &Store{client: client, cacheName: cacheName, owned: true}, nil
}

// ensureCache creates cacheName unless it exists.
func ensureCache(ctx context.Context, client momento.CacheClient, cacheName string) error {
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

// Close closes the client if [Open] made it; a client passed to [New]
// belongs to the caller.
func (s *Store) Close() {
	if s.owned {
		s.client.Close()
	}
}

// Get implements [readthrough.Store].
func (s *Store) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	resp, err := s.client.Get(ctx, &momento.GetRequest{CacheName: s.cacheName, Key: momento.String(key)})
	if err != nil {
		return nil, false, mapError(ctx, "get", err)
	}
	switch r := resp.(type) {
	case *responses.GetHit:
		return r.ValueByte(), true, nil
	case *responses.GetMiss:
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("momentostore: get: unexpected response %T", resp)
}

// Set implements [readthrough.Store].
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ttl, err := checkWrite(ctx, value, ttl)
	if err != nil {
		return err
	}
	_, err = s.client.Set(ctx, &momento.SetRequest{
		CacheName: s.cacheName, Key: momento.String(key), Value: momento.Bytes(value), Ttl: ttl,
	})
	if err != nil {
		return mapError(ctx, "set", err)
	}
	return nil
}

// SetIfAbsent implements [readthrough.Store]. It also reports true when
// key already holds exactly value: a retry of an acquisition that already
// succeeded. readthrough's lock tokens are unique per flight, so no other
// flight can match.
func (s *Store) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ttl, err := checkWrite(ctx, value, ttl)
	if err != nil {
		return false, err
	}
	resp, err := s.client.SetIfAbsentOrEqual(ctx, &momento.SetIfAbsentOrEqualRequest{
		CacheName: s.cacheName, Key: momento.String(key), Value: momento.Bytes(value), Equal: momento.Bytes(value), Ttl: ttl,
	})
	if err != nil {
		return false, mapError(ctx, "set if absent", err)
	}
	switch resp.(type) {
	case *responses.SetIfAbsentOrEqualStored:
		return true, nil
	case *responses.SetIfAbsentOrEqualNotStored:
		return false, nil
	}
	return false, fmt.Errorf("momentostore: set if absent: unexpected response %T", resp)
}

// Delete implements [readthrough.Store].
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.client.Delete(ctx, &momento.DeleteRequest{CacheName: s.cacheName, Key: momento.String(key)}); err != nil {
		return mapError(ctx, "delete", err)
	}
	return nil
}

// releaseTTL is how long a released lock lingers: Momento's shortest TTL.
const releaseTTL = time.Millisecond

// CompareAndDelete implements [store.CompareAndDeleter]. Momento
// has no conditional delete, so it rewrites the key to itself with a 1 ms
// TTL, only if it still holds value: the key is gone a millisecond later.
func (s *Store) CompareAndDelete(ctx context.Context, key string, value []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	resp, err := s.client.SetIfEqual(ctx, &momento.SetIfEqualRequest{
		CacheName: s.cacheName, Key: momento.String(key), Value: momento.Bytes(value), Equal: momento.Bytes(value), Ttl: releaseTTL,
	})
	if err != nil {
		return false, mapError(ctx, "release", err)
	}
	switch resp.(type) {
	case *responses.SetIfEqualStored:
		return true, nil
	case *responses.SetIfEqualNotStored:
		return false, nil
	}
	return false, fmt.Errorf("momentostore: release: unexpected response %T", resp)
}

// Limits implements [store.Limiter].
func (s *Store) Limits() store.Limits {
	return store.Limits{MaxTTL: MaxTTL, TTLGranularity: time.Millisecond, MaxEntrySize: MaxValueSize}
}

// checkWrite rejects a done context, a value too large and a TTL out of
// Momento's range, and rounds the TTL up to whole milliseconds.
func checkWrite(ctx context.Context, value []byte, ttl time.Duration) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(value) > MaxValueSize {
		return 0, fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, len(value), MaxValueSize)
	}
	// Zero would mean "the client's default TTL" to the SDK: never send it.
	if ttl < time.Millisecond || ttl > MaxTTL {
		return 0, fmt.Errorf("%w: %v (want 1ms to %v)", ErrTTL, ttl, MaxTTL)
	}
	return (ttl + time.Millisecond - 1).Truncate(time.Millisecond), nil
}

// mapError turns the SDK's error into one of the package's, keeping the
// original in the chain. A call cut short by its own context reports the
// context's error too, so callers can tell they gave up.
func mapError(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("momentostore: %s: %w: %w", op, cerr, err)
	}
	var me momento.MomentoError
	if !errors.As(err, &me) {
		return fmt.Errorf("momentostore: %s: %w", op, err)
	}
	var kind error
	switch me.Code() {
	case momento.CacheNotFoundError:
		return fmt.Errorf("momentostore: %s: %w (create it, or use momentostore.Open): %w", op, ErrCacheNotFound, err)
	case momento.TimeoutError, momento.ServerUnavailableError, momento.ConnectionError,
		momento.InternalServerError, momento.CanceledError, momento.UnknownServiceError,
		momento.ClientResourceExhaustedError:
		kind = ErrUnavailable
	case momento.LimitExceededError:
		kind = ErrLimitExceeded
	case momento.AuthenticationError, momento.PermissionError:
		kind = ErrAuth
	default:
		return fmt.Errorf("momentostore: %s: %w", op, err)
	}
	return fmt.Errorf("momentostore: %s: %w: %w", op, kind, err)
}
