package readthrough

import (
	"errors"
	"fmt"
	"github.com/readthrough-go/readthrough/store"
	"log/slog"
	"math"
	"strings"
	"time"
)

// Defaults for zero [Options] and [LockOptions] fields.
const (
	DefaultTTL              = 5 * time.Minute
	DefaultStoreTimeout     = time.Second
	DefaultLoadTimeout      = 30 * time.Second
	DefaultLockTTL          = 5 * time.Second
	DefaultPollInterval     = time.Millisecond
	DefaultMaxPollInterval  = 3 * time.Millisecond
	DefaultRetakeInterval   = 20 * time.Millisecond
	DefaultFailSafeThrottle = 10 * time.Second
	DefaultBreakerCoolDown  = 5 * time.Second
	DefaultMaxRefreshes     = 64
)

// ErrInvalidOptions is wrapped by every error [New] returns for options it
// cannot accept.
var ErrInvalidOptions = errors.New("readthrough: invalid options")

// Options configures a [Cache]. The zero value, like a nil *Options, means
// every default.
type Options[K comparable, V any] struct {
	// Namespace prefixes every store key: "product" gives "product:<key>",
	// the key shape of the Momento read-through pattern, so other writers
	// can share the cache. Empty adds no prefix. It may not contain NUL.
	Namespace string

	// TTL is how long a loaded value stays in the store. Default 5 minutes.
	TTL time.Duration

	// NegativeTTL is how long a not-found stays cached, so missing IDs do
	// not reach the upstream on every request. Zero: not-found is never
	// cached and every call for a missing key runs the loader.
	NegativeTTL time.Duration

	// TTLJitter, when positive, adds a random duration in [0, TTLJitter)
	// to each write's TTL (value or not-found), so keys loaded together do
	// not expire together. Zero: TTLs are exact.
	TTLJitter time.Duration

	// KeyFunc derives the store key from K. Required unless K's underlying
	// type is a string or an integer, which are used as they are (integers
	// in decimal). It must be deterministic: equal keys, equal strings.
	KeyFunc func(K) string

	// Codec encodes values. Default: raw bytes for []byte and string
	// values, JSON for everything else.
	Codec Codec[V]

	// IsNotFound reports whether a loader error means "no such key", to be
	// cached for NegativeTTL like [ErrNotFound]. Use it to map errors you
	// do not control, such as sql.ErrNoRows or an HTTP 404. Errors that
	// match ErrNotFound count as not-found whatever it says.
	IsNotFound func(error) bool

	// StoreTimeout bounds each store operation, so a hanging store costs
	// callers at most this before the loader serves them. Default 1s.
	StoreTimeout time.Duration

	// LoadTimeout bounds a shared load: the loader's context ends after
	// it, whether or not any caller still waits. Default 30s.
	LoadTimeout time.Duration

	// Logger receives store errors (at most one line per key burst of
	// errors, see [Stats] for counts) and loader panics. Default: discard.
	Logger *slog.Logger

	// Lock configures the distributed lock that keeps processes sharing a
	// store from loading the same key at once.
	Lock LockOptions

	// The options below keep callers fast and served when the upstream is
	// slow or down. All are off at their zero value.

	// StaleWhileRevalidate keeps an entry servable for this long after its
	// TTL: a call in that window gets the stale value at once
	// ([SourceStale]) and starts one background refresh for the key (one
	// per process, and one across processes through the lock: a refresh
	// that finds the lock taken skips).
	StaleWhileRevalidate time.Duration

	// EarlyRefresh is XFetch's β: with β > 0 a fresh hit starts a
	// background refresh before expiry with probability rising as expiry
	// nears, sooner for values that were slow to load (Vattani et al.,
	// VLDB 2015: refresh when now − Δ·β·ln(rand()) ≥ expiry, Δ the last
	// load's duration). 1 is the paper's choice; above 1 refreshes earlier.
	// Hot keys then never expire under load, with no coordination.
	EarlyRefresh float64

	// FailSafe serves an expired value when its reload fails.
	FailSafe FailSafeOptions

	// SoftLoadTimeout, when a stale value is at hand (see FailSafe and
	// StaleWhileRevalidate), returns it after this long instead of waiting
	// for a slow load; the load goes on in the background and updates the
	// cache. LoadTimeout stays the hard limit.
	SoftLoadTimeout time.Duration

	// Breaker skips the store after repeated failures.
	Breaker BreakerOptions

	// MaxRefreshes bounds the background refreshes running at once; a
	// refresh beyond it is skipped (counted). Default 64.
	MaxRefreshes int
}

// FailSafeOptions configures fail-safe: when a load fails (an error, a
// timeout, a panic) and the key's expired value is at most MaxStale past
// its TTL, callers get that value with a nil error ([SourceStale]), and
// the value is re-armed as fresh for Throttle, so a failing upstream is
// not called on every request. A not-found from the loader is an answer,
// not a failure: it replaces the value as usual.
type FailSafeOptions struct {
	// MaxStale is how long after its TTL a value may still be served by
	// fail-safe. Zero turns fail-safe off.
	MaxStale time.Duration

	// Throttle is how long a re-armed value is served before the upstream
	// is tried again. Default 10s.
	Throttle time.Duration
}

// BreakerOptions configures the store circuit breaker: after Failures
// store errors in a row, the cache skips the store for CoolDown (the
// loader serves every call, counted in [Stats].StoreSkips), then lets one
// call probe it. An outage then costs one StoreTimeout per cool-down,
// not one per call.
type BreakerOptions struct {
	// Failures is how many consecutive store errors open the breaker.
	// Zero turns the breaker off.
	Failures int

	// CoolDown is how long the store is skipped. Default 5s.
	CoolDown time.Duration
}

// LockOptions configures the distributed lock taken on a miss.
//
// On a miss, one process wins SetIfAbsent on the key's lock and loads;
// the others poll the store for the value (one Get per poll), starting at
// PollInterval and backing off with jitter up to MaxPollInterval, and
// return it as soon as it lands. Every RetakeInterval they also try to
// take the lock, in case its holder died; after MaxWait they load anyway.
//
// The defaults keep the wait after a value lands under about 4 ms (see
// BENCHMARKS.md) for about 330 Gets per second per waiting process: only
// one caller per process polls, whatever the number of callers.
type LockOptions struct {
	// Disabled turns the distributed lock off: only the in-process
	// single-flight remains, so each process loads once per key.
	Disabled bool

	// TTL is how long the lock lives: the longest a crashed loader can
	// hold a key. Keep it above your slowest load, or a second process
	// may load while the first still runs. Default 5s.
	TTL time.Duration

	// PollInterval is the first wait between polls. Default 1ms.
	PollInterval time.Duration

	// MaxPollInterval caps the backoff between polls: a waiter returns at
	// most about this long after the value lands. Default 3ms.
	MaxPollInterval time.Duration

	// RetakeInterval is how often a waiter also tries to take the lock, so
	// a lock whose holder died (and expired) is taken over. Default 20ms.
	RetakeInterval time.Duration

	// MaxWait is how long a process waits on another's lock before it
	// loads anyway. Default: TTL.
	MaxWait time.Duration
}

// config is Options with defaults filled and derived values computed.
type config[K comparable, V any] struct {
	Options[K, V]
	limits store.Limits
}

// staleWindow is how long past its TTL a value is kept in the store, for
// stale-while-revalidate or fail-safe.
func (c *config[K, V]) staleWindow() time.Duration {
	return max(c.StaleWhileRevalidate, c.FailSafe.MaxStale)
}

func newConfig[K comparable, V any](st Store, opts *Options[K, V]) (*config[K, V], error) {
	if st == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalidOptions)
	}
	c := &config[K, V]{}
	if opts != nil {
		c.Options = *opts
	}
	if l, ok := st.(store.Limiter); ok {
		c.limits = l.Limits()
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	o := &c.Options
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.StoreTimeout == 0 {
		o.StoreTimeout = DefaultStoreTimeout
	}
	if o.LoadTimeout == 0 {
		o.LoadTimeout = DefaultLoadTimeout
	}
	if o.Lock.TTL == 0 {
		o.Lock.TTL = DefaultLockTTL
	}
	if o.Lock.PollInterval == 0 {
		o.Lock.PollInterval = DefaultPollInterval
	}
	if o.Lock.MaxPollInterval == 0 {
		o.Lock.MaxPollInterval = max(DefaultMaxPollInterval, o.Lock.PollInterval)
	}
	if o.Lock.MaxWait == 0 {
		o.Lock.MaxWait = o.Lock.TTL
	}
	if o.Lock.RetakeInterval == 0 {
		o.Lock.RetakeInterval = DefaultRetakeInterval
	}
	if o.FailSafe.Throttle == 0 {
		o.FailSafe.Throttle = DefaultFailSafeThrottle
	}
	if o.Breaker.CoolDown == 0 {
		o.Breaker.CoolDown = DefaultBreakerCoolDown
	}
	if o.MaxRefreshes == 0 {
		o.MaxRefreshes = DefaultMaxRefreshes
	}
	if o.Codec == nil {
		o.Codec = defaultCodec[V]()
	}
	if o.KeyFunc == nil {
		f, err := defaultKeyFunc[K]()
		if err != nil {
			return nil, err
		}
		o.KeyFunc = f
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// Checked after defaults, so a store's MaxTTL also catches the default TTL.
	if err := c.validateLimits(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *config[K, V]) validate() error {
	o := &c.Options
	if strings.IndexByte(o.Namespace, 0) >= 0 {
		return fmt.Errorf("%w: Namespace %q contains a NUL byte", ErrInvalidOptions, o.Namespace)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"TTL", o.TTL},
		{"NegativeTTL", o.NegativeTTL},
		{"TTLJitter", o.TTLJitter},
		{"StoreTimeout", o.StoreTimeout},
		{"LoadTimeout", o.LoadTimeout},
		{"Lock.TTL", o.Lock.TTL},
		{"Lock.PollInterval", o.Lock.PollInterval},
		{"Lock.MaxPollInterval", o.Lock.MaxPollInterval},
		{"Lock.MaxWait", o.Lock.MaxWait},
		{"Lock.RetakeInterval", o.Lock.RetakeInterval},
		{"StaleWhileRevalidate", o.StaleWhileRevalidate},
		{"FailSafe.MaxStale", o.FailSafe.MaxStale},
		{"FailSafe.Throttle", o.FailSafe.Throttle},
		{"SoftLoadTimeout", o.SoftLoadTimeout},
		{"Breaker.CoolDown", o.Breaker.CoolDown},
	} {
		if d.v < 0 {
			return fmt.Errorf("%w: %s is negative (%v)", ErrInvalidOptions, d.name, d.v)
		}
	}
	if o.EarlyRefresh < 0 || math.IsNaN(o.EarlyRefresh) || math.IsInf(o.EarlyRefresh, 0) {
		return fmt.Errorf("%w: EarlyRefresh must be a finite β >= 0 (got %v)", ErrInvalidOptions, o.EarlyRefresh)
	}
	if o.Breaker.Failures < 0 {
		return fmt.Errorf("%w: Breaker.Failures is negative (%d)", ErrInvalidOptions, o.Breaker.Failures)
	}
	if o.MaxRefreshes < 0 {
		return fmt.Errorf("%w: MaxRefreshes is negative (%d)", ErrInvalidOptions, o.MaxRefreshes)
	}
	if o.Lock.MaxPollInterval > 0 && o.Lock.PollInterval > o.Lock.MaxPollInterval {
		return fmt.Errorf("%w: Lock.PollInterval (%v) is above Lock.MaxPollInterval (%v)",
			ErrInvalidOptions, o.Lock.PollInterval, o.Lock.MaxPollInterval)
	}
	return nil
}

// validateLimits checks the filled options against the store's limits.
func (c *config[K, V]) validateLimits() error {
	l, o := c.limits, &c.Options
	if l.MaxTTL <= 0 {
		return nil
	}
	type check struct {
		name string
		v    time.Duration
	}
	checks := []check{{"TTL+TTLJitter+stale window", o.TTL + o.TTLJitter + c.staleWindow()}, {"Lock.TTL", o.Lock.TTL}}
	if o.NegativeTTL > 0 {
		checks = append(checks, check{"NegativeTTL+TTLJitter", o.NegativeTTL + o.TTLJitter})
	}
	for _, d := range checks {
		if d.v > l.MaxTTL {
			return fmt.Errorf("%w: %s (%v) is above the store's longest TTL (%v)",
				ErrInvalidOptions, d.name, d.v, l.MaxTTL)
		}
	}
	return nil
}
