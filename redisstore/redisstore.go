// Package redisstore puts Redis or Valkey behind [readthrough.Store], with
// go-redis v9.
//
// Any [redis.UniversalClient] works unchanged: a single node
// (*redis.Client), a Cluster (*redis.ClusterClient), a Sentinel failover
// client or a *redis.Ring. Each operation touches one key, so keys may
// live in any cluster slot. Commands go through the client you pass, so
// its hooks (tracing, metrics) see every one; the store never changes the
// client's options (its one addition, on a RESP3 client with
// notifications on, is a handler for Redis's invalidation pushes: see
// below).
//
//	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	products, err := readthrough.New[int, Product](redisstore.New(rdb), &readthrough.Options[int, Product]{
//		Namespace: "product",
//	})
//
// # Commands
//
// Get is GET (a nil reply is a miss), Set is SET PX, Delete is DEL.
// SetIfAbsent and GetOrSet are SET NX GET PX, which answers with what the
// key held: nothing means stored, and so does our own value (a retry by
// go-redis whose first reply was lost), so a retried call stays
// idempotent. CompareAndSwap and CompareAndDelete are Lua scripts run by
// EVALSHA (EVAL after a NOSCRIPT); CompareAndSwap compares an old value
// above 64 bytes by its SHA-1, so a large entry is not sent twice. Batch
// is one pipeline. TTLs are whole milliseconds, rounded up; below 1 ms is
// an error, never "no expiry".
//
// SET with both NX and GET needs Redis 7.0 or Valkey 7.2. An older server
// answers it with a syntax error; the store then switches, once, to a Lua
// script doing the same atomically, one round trip as before.
//
// # Timeouts
//
// Every call returns by its context's deadline, with an error matching
// ctx.Err(), even when the server accepts a command and never answers.
// go-redis ignores context deadlines on its sockets unless
// ContextTimeoutEnabled is set, which is off by default: such a call
// would wait out ReadTimeout, once per retry. So unless the client is a
// *redis.Client or *redis.Ring with ContextTimeoutEnabled, each command
// whose context can end runs on a goroutine of its own, and the caller
// returns at ctx.Done; the command finishes on its own when go-redis's
// timeout fires. While 1024 such abandoned commands are still running,
// calls fail at once with [ErrBacklog]. A *redis.ClusterClient always
// gets the goroutine: until its first COMMAND succeeds it waits up to 5 s
// on each call whatever the context. With ContextTimeoutEnabled, a cancel
// before the deadline reaches no socket, and the call returns at the
// deadline at the latest; a context that can never end
// (context.Background) always runs inline.
//
// The goroutine costs a hit (Get of 100 bytes) 4 allocations and 240
// bytes, and scheduler work: handing the command to a goroutine and the
// reply back can wake other OS threads. Measured with BenchmarkGet in
// this package, loopback redis-server 7.0 on the same 2-vCPU linux/amd64
// VM, Go 1.26, median of 6 runs:
//
//	                                 GOMAXPROCS=1  GOMAXPROCS=2  allocs  bytes
//	ContextTimeoutEnabled (inline)       28 µs         31 µs        7     328
//	default client (goroutine)           31 µs         50 µs       11     568
//
// The second column overstates what a server with cores to spare pays
// (the woken threads compete with redis-server for two vCPUs), but the
// cost is real: where it matters, build a *redis.Client or *redis.Ring
// with ContextTimeoutEnabled, and calls run inline.
//
// # Notifications
//
// Store implements store.Notifier with Redis's server-assisted client-side
// caching (CLIENT TRACKING in BCAST mode, on the namespaces' prefixes), so
// readthrough's near cache drops a copy the moment any writer changes its
// key (another process, a script's raw SET or DEL, an expiry, an
// eviction), and a process waiting on another's load wakes when the value
// lands. The first Notify starts the link on the client's own
// connections; nothing needs configuring. Every change is reported,
// typically within a millisecond on loopback (p99 under 0.5 ms measured).
// A killed or reset connection, a restart or a flush is reported as a
// lost link at once; a silent one (a blackholed network, a paused server)
// within 1 s, by a 500 ms heartbeat; a new Cluster master within about a
// second, a Sentinel failover within about 1.5 s. While the link is down,
// readthrough bounds its near copies by Near.MaxAge. Each tracked node
// holds one connection from the client's pool for the link (two with
// RESP2, which also needs CLIENT LIST to find its receiver). A client
// that already handles invalidation pushes itself (go-redis's own
// client-side cache) cannot also be tracked. See Store.Notify.
package redisstore

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/store"
	"github.com/redis/go-redis/v9"
)

var (
	_ readthrough.Store       = (*Store)(nil)
	_ store.GetOrSetter       = (*Store)(nil)
	_ store.CompareAndSwapper = (*Store)(nil)
	_ store.CompareAndDeleter = (*Store)(nil)
	_ store.Batcher           = (*Store)(nil)
	_ store.Limiter           = (*Store)(nil)
	_ store.Bounded           = (*Store)(nil)
)

// maxEntrySize is Redis's default proto-max-bulk-len, the largest string
// it takes.
const maxEntrySize = 512 << 20

// hashAbove is the length above which CompareAndSwap sends the SHA-1 of
// old (40 hex bytes) instead of old itself.
const hashAbove = 64

// ErrTTL is returned for a TTL Redis cannot honour.
var ErrTTL = errors.New("redisstore: ttl below 1ms")

// compareAndDelete deletes KEYS[1] only while it holds ARGV[1].
var compareAndDelete = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// compareAndSwap sets KEYS[1] to ARGV[1] with PX ARGV[2] while it holds
// the old value, or already holds ARGV[1] (a retry whose reply was lost,
// or a lease renewed for itself), and returns 1; otherwise 0. With ARGV[4]
// empty, ARGV[3] is the old value; otherwise ARGV[3] is its SHA-1 in hex
// and ARGV[4] its length, checked first so most mismatches hash nothing.
var compareAndSwap = redis.NewScript(`
local cur = redis.call("GET", KEYS[1])
if not cur then
	return 0
end
local held
if ARGV[4] == "" then
	held = cur == ARGV[3]
else
	held = #cur == tonumber(ARGV[4]) and redis.sha1hex(cur) == ARGV[3]
end
if held or cur == ARGV[1] then
	redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
	return 1
end
return 0`)

// setNXGet is SET KEYS[1] ARGV[1] NX GET PX ARGV[2] for servers before
// Redis 7.0: it returns what the key holds, or 0 when it stored.
var setNXGet = redis.NewScript(`
local cur = redis.call("GET", KEYS[1])
if cur then
	return cur
end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
return 0`)

// Store is a [readthrough.Store] over a go-redis client. Create it with
// [New]; it is safe for concurrent use, as the client is.
type Store struct {
	client redis.UniversalClient
	link   notifyLink // see notify.go

	direct       bool         // the client bounds its sockets by ctx deadlines; see honoursDeadlines
	abandoned    atomic.Int64 // commands still running whose callers returned
	maxAbandoned int64        // the backlog limit: the constant maxAbandoned, lowered by tests
	legacyNXGet  atomic.Bool  // the server rejected SET NX GET: use the setNXGet script
	bulkLimit    atomic.Int64 // the server's proto-max-bulk-len below 512 MB, once learned; -1: the default
}

// New returns a Store using client. Commands go through client, with its
// own pool, retries and hooks; each call is also bounded by its context
// (see Timeouts in the package doc).
func New(client redis.UniversalClient) *Store {
	return &Store{client: client, direct: honoursDeadlines(client), maxAbandoned: maxAbandoned}
}

// Get implements [readthrough.Store]: GET, with a nil reply as a miss.
func (s *Store) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	cmd := redis.NewStringCmd(ctx, "get", key)
	if err := s.process(ctx, cmd); err != nil {
		return nil, false, fail(ctx, "GET", err)
	}
	b, err := cmd.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fail(ctx, "GET", err)
	}
	return b, true, nil
}

// Set implements [readthrough.Store]: SET with a millisecond expiry.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ms, err := s.checkWrite(ctx, key, value, ttl)
	if err != nil {
		return err
	}
	cmd := setCmd(ctx, key, value, ms)
	if err := s.process(ctx, cmd); err != nil {
		return fail(ctx, "SET", err)
	}
	if err := cmd.Err(); err != nil {
		return s.failWrite(ctx, "SET", err, max(len(key), len(value)))
	}
	return nil
}

// SetIfAbsent implements [readthrough.Store]: SET NX GET with a
// millisecond expiry. It reports true when the key held nothing, and when
// it already held exactly value: a command go-redis retried after losing
// its reply finds our own value there.
func (s *Store) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	_, stored, err := s.setIfAbsent(ctx, "SetIfAbsent", key, value, ttl)
	return stored, err
}

// GetOrSet implements [store.GetOrSetter]: SET NX GET with a millisecond
// expiry, one round trip. A key that already holds exactly value counts as
// stored, as in SetIfAbsent.
func (s *Store) GetOrSet(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	return s.setIfAbsent(ctx, "GetOrSet", key, value, ttl)
}

func (s *Store) setIfAbsent(ctx context.Context, op, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	ms, err := s.checkWrite(ctx, key, value, ttl)
	if err != nil {
		return nil, false, err
	}
	// The closure writes only its own variables: if the caller leaves
	// early, it may still be running.
	var cur []byte
	var held bool
	var cmdErr error
	if err := s.run(ctx, func(ctx context.Context) {
		if !s.legacyNXGet.Load() {
			cmd := setNXGetCmd(ctx, key, value, ms)
			_ = s.client.Process(ctx, cmd)
			if !syntaxError(cmd.Err()) {
				cur, held, cmdErr = nxGetReply(cmd)
				return
			}
			s.legacyNXGet.Store(true)
		}
		cur, held, cmdErr = scriptNXGetReply(setNXGet.Run(ctx, s.client, []string{key}, value, ms))
	}); err != nil {
		return nil, false, fail(ctx, op, err)
	}
	if cmdErr != nil {
		return nil, false, s.failWrite(ctx, op, cmdErr, max(len(key), len(value)))
	}
	if !held || string(cur) == string(value) {
		return nil, true, nil
	}
	return cur, false, nil
}

// Delete implements [readthrough.Store]: DEL.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cmd := redis.NewIntCmd(ctx, "del", key)
	if err := s.process(ctx, cmd); err != nil {
		return fail(ctx, "DEL", err)
	}
	if err := cmd.Err(); err != nil {
		return fail(ctx, "DEL", err)
	}
	return nil
}

// CompareAndSwap implements [store.CompareAndSwapper] with a script, one
// round trip, atomically on the server. It also reports true when the key
// already holds exactly value, and then sets the TTL again. An old value
// above 64 bytes is compared by its SHA-1, so a large entry crosses the
// wire once.
func (s *Store) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	ms, err := s.checkWrite(ctx, key, value, ttl)
	if err != nil {
		return false, err
	}
	args := casArgs(value, ms, old)
	var n int64
	var cmdErr error
	if err := s.run(ctx, func(ctx context.Context) {
		n, cmdErr = compareAndSwap.Run(ctx, s.client, []string{key}, args...).Int64()
	}); err != nil {
		return false, fail(ctx, "compare-and-swap", err)
	}
	if cmdErr != nil {
		return false, s.failWrite(ctx, "compare-and-swap", cmdErr, max(len(key), len(value), len(old)))
	}
	return n == 1, nil
}

// CompareAndDelete implements [store.CompareAndDeleter] with a script,
// atomically on the server.
func (s *Store) CompareAndDelete(ctx context.Context, key string, value []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var n int64
	var cmdErr error
	if err := s.run(ctx, func(ctx context.Context) {
		n, cmdErr = compareAndDelete.Run(ctx, s.client, []string{key}, value).Int64()
	}); err != nil {
		return false, fail(ctx, "compare-and-delete", err)
	}
	if cmdErr != nil {
		return false, fail(ctx, "compare-and-delete", cmdErr)
	}
	return n == 1, nil
}

// Limits implements [store.Limiter]: millisecond TTLs, and entries up to
// Redis's default proto-max-bulk-len of 512 MB. A server configured lower
// refuses a larger value with an error matching [store.ErrTooLarge].
func (s *Store) Limits() store.Limits {
	return store.Limits{TTLGranularity: time.Millisecond, MaxEntrySize: maxEntrySize}
}

// checkWrite checks what every write checks before it is sent, and
// returns the TTL in whole milliseconds.
func (s *Store) checkWrite(ctx context.Context, key string, value []byte, ttl time.Duration) (int64, error) {
	ttl, err := roundTTL(ctx, ttl)
	if err != nil {
		return 0, err
	}
	if n := len(key) + len(value); n > maxEntrySize {
		return 0, fmt.Errorf("redisstore: %d bytes: %w", n, store.ErrTooLarge)
	}
	if lim := s.bulkLimit.Load(); lim > 0 && int64(max(len(key), len(value))) > lim {
		return 0, fmt.Errorf("redisstore: %d bytes, above the server's proto-max-bulk-len of %d: %w", len(value), lim, store.ErrTooLarge)
	}
	return ttl.Milliseconds(), nil
}

// failWrite wraps err from a write of an argument of n bytes. A server
// refuses a string above its proto-max-bulk-len with an error reply, and
// closes the connection as it does; a client still sending the value may
// see only the reset. So a write above 1 MB (the least proto-max-bulk-len
// Redis accepts) that died on the network asks the server its limit, once,
// and matches [store.ErrTooLarge] if it was above it; later writes above
// the limit then fail before they are sent.
func (s *Store) failWrite(ctx context.Context, op string, err error, n int) error {
	if n > minBulkLimit && !isReply(err) && ctxErr(ctx) == nil {
		if lim := s.serverBulkLimit(ctx); lim > 0 && int64(n) > lim {
			return fmt.Errorf("redisstore: %s: %d bytes, above the server's proto-max-bulk-len of %d: %w: %w", op, n, lim, store.ErrTooLarge, err)
		}
	}
	return fail(ctx, op, err)
}

// minBulkLimit is the least proto-max-bulk-len Redis accepts.
const minBulkLimit = 1 << 20

// serverBulkLimit returns the server's proto-max-bulk-len, asking it the
// first time; 0 when it cannot tell (CONFIG is often disabled on managed
// servers: then it is taken as the default, and never asked again).
func (s *Store) serverBulkLimit(ctx context.Context) int64 {
	if lim := s.bulkLimit.Load(); lim != 0 {
		return max(lim, 0)
	}
	cmd := redis.NewMapStringStringCmd(ctx, "config", "get", "proto-max-bulk-len")
	if s.process(ctx, cmd) != nil {
		return 0
	}
	m, err := cmd.Result()
	if err != nil && !isReply(err) {
		return 0 // the network again: ask next time
	}
	lim, perr := strconv.ParseInt(m["proto-max-bulk-len"], 10, 64)
	if err != nil || perr != nil || lim <= 0 || lim >= maxEntrySize {
		s.bulkLimit.Store(-1)
		return 0
	}
	s.bulkLimit.Store(lim)
	return lim
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

func setCmd(ctx context.Context, key string, value []byte, ms int64) *redis.StatusCmd {
	return redis.NewStatusCmd(ctx, "set", key, value, "px", ms)
}

func setNXGetCmd(ctx context.Context, key string, value []byte, ms int64) *redis.StringCmd {
	return redis.NewStringCmd(ctx, "set", key, value, "nx", "get", "px", ms)
}

// nxGetReply reads SET NX GET's reply: nil when it stored, else what the
// key held.
func nxGetReply(cmd *redis.StringCmd) (cur []byte, held bool, err error) {
	b, err := cmd.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// scriptNXGetReply reads setNXGet's reply: 0 when it stored, else what
// the key held.
func scriptNXGetReply(cmd *redis.Cmd) (cur []byte, held bool, err error) {
	v, err := cmd.Result()
	if err != nil {
		return nil, false, err
	}
	switch v := v.(type) {
	case int64:
		return nil, false, nil
	case string:
		return []byte(v), true, nil
	}
	return nil, false, fmt.Errorf("unexpected reply %T from the set-if-absent script", v)
}

// casArgs is ARGV for the compareAndSwap script.
func casArgs(value []byte, ms int64, old []byte) []any {
	if len(old) <= hashAbove {
		return []any{value, ms, old, ""}
	}
	sum := sha1.Sum(old)
	return []any{value, ms, hex.EncodeToString(sum[:]), strconv.Itoa(len(old))}
}

// Bounded implements [store.Bounded]: every call returns at its ctx deadline (see the package doc), so readthrough calls it directly.
func (s *Store) Bounded() {}
