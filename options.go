package readthrough

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/readthrough-go/readthrough/store"
)

// Options configures a [Cache]. The zero value, like a nil *Options, means
// every default. [New] rejects options that are negative, conflict, or
// would do nothing, with an error matching [ErrInvalidOptions].
type Options[K comparable, V any] struct {
	// Namespace prefixes every store key: "product" gives "product:<key>",
	// the key shape of the Momento read-through pattern, so other writers
	// can share the cache. Empty adds no prefix. It may not contain NUL.
	Namespace string

	// TTL is how long a loaded value stays fresh. Default 5 minutes.
	TTL time.Duration

	// NegativeTTL is how long a not-found stays cached, so missing IDs do
	// not reach the upstream on every request. Zero: not-found is never
	// cached and every call for a missing key runs the loader.
	NegativeTTL time.Duration

	// NotFoundError is the error every not-found is returned as: from the
	// loader, from a cached not-found, from another process's load. It is
	// wrapped so it matches both itself and [ErrNotFound]; set it to
	// sql.ErrNoRows, say, so a caching decorator keeps its repository's
	// contract on every path. Nil: ErrNotFound itself.
	NotFoundError error

	// IsNotFound reports whether a loader error means "no such key", to be
	// cached for NegativeTTL like [ErrNotFound]. Use it to map errors you
	// do not control, such as sql.ErrNoRows or an HTTP 404. Errors that
	// match ErrNotFound count as not-found whatever it says.
	IsNotFound func(error) bool

	// KeyFunc derives the store key from K. Required unless K's underlying
	// type is a string or an integer, which are used as they are (integers
	// in decimal). It must be deterministic: equal keys, equal strings.
	KeyFunc func(K) string

	// Codec encodes values. Default: raw bytes for []byte and string
	// values, JSON for everything else.
	Codec Codec[V]

	// Near keeps decoded values in process memory, so repeat hits make no
	// store call and no decode. Off unless MaxEntries is set.
	Near NearOptions

	// StoreTimeout bounds the store calls a request makes before its load
	// (one budget for all of them) and each call made on its own. A
	// request that meets a store failure or this timeout goes to the
	// loader and touches the store no more, so a hung store costs a caller
	// at most one StoreTimeout. It must be below LoadTimeout. Default 1s,
	// or half of LoadTimeout if that is shorter.
	StoreTimeout time.Duration

	// LoadTimeout bounds a load: the loader's context ends after it, and
	// every caller waiting on the load returns at it with an error
	// matching context.DeadlineExceeded, even if the loader ignores its
	// context. Default 30s.
	LoadTimeout time.Duration

	// Logger receives store errors (at most one line every 10 s), loader
	// panics, and warnings about the namespace. Lines carry the attributes
	// "namespace", "key", "op" and "err". Default: discard.
	Logger *slog.Logger

	// Recorder receives every event: hits by source, misses, loads, store
	// operations, lock waits, breaker transitions, near-cache evictions.
	// [Cache.Stats] counts them whatever this is. Nil: none but Stats.
	Recorder Recorder

	// Lock configures the lease that keeps processes sharing a store from
	// loading the same key at once.
	Lock LockOptions

	// The options below keep callers fast and served when the upstream is
	// slow or down. All are off at their zero value. Each Cache applies
	// its own: the stale windows of the process that wrote an entry do
	// not decide what another process serves.

	// StaleWhileRevalidate keeps a value servable for this long after its
	// TTL: a call in that window gets the stale value at once
	// ([SourceStale]) and starts one background refresh for the key (one
	// per process, and one across processes through the key's lease).
	StaleWhileRevalidate time.Duration

	// EarlyRefresh is XFetch's β: with β > 0 a fresh hit starts a
	// background refresh before expiry with probability rising as expiry
	// nears, sooner for values that were slow to load (Vattani et al.,
	// VLDB 2015: refresh when now − Δ·β·ln(rand()) ≥ expiry, Δ the last
	// load's duration; for a value written by [Cache.Set], the duration of
	// this Cache's recent loads, or 1% of TTL before any). 1 is the
	// paper's choice; above 1 refreshes earlier.
	EarlyRefresh float64

	// FailSafe serves an expired value when its reload fails.
	FailSafe FailSafeOptions

	// SoftLoadTimeout, when FailSafe has an expired value at hand, returns
	// it after this long instead of waiting for a slow load; the load goes
	// on in the background and updates the cache. It needs FailSafe and
	// must be below LoadTimeout, which stays the hard limit.
	SoftLoadTimeout time.Duration

	// Breaker skips the store after repeated failures.
	Breaker BreakerOptions

	// TTLJitter, when positive, adds a random duration in [0, TTLJitter)
	// to each value's TTL, and the same share of NegativeTTL to a
	// not-found's (TTLJitter·NegativeTTL/TTL), so keys written together do
	// not expire together. Zero: TTLs are exact.
	TTLJitter time.Duration

	// MaxRefreshes bounds the background refreshes running at once; a
	// refresh beyond it is skipped (counted). Only with
	// StaleWhileRevalidate or EarlyRefresh. Default 64.
	MaxRefreshes int
}

// NearOptions configures the near cache: a bounded in-process copy of decoded values in front of the store.
//
// A near copy is answered with [SourceNear]: no store call, no decode. It
// is never served past its entry's fresh-until (a not-found's at most
// NegativeTTL), and it is evicted when any writer changes the key, when
// the store can tell (a store implementing store.Notifier, such as
// redisstore and memstore): a Set, a Delete, another process's load, a
// raw write by a script, an expiry. When the store's notification link is
// lost, every copy is dropped at once. A store that cannot notify (or
// while its link is down) bounds each copy's life by MaxAge.
//
// Copies are shared: every caller gets the same V. Treat values as
// immutable, or give V a type whose copy shares nothing (no pointers,
// slices or maps) — a caller that mutates a shared value changes it for
// every later near hit.
type NearOptions struct {
	MaxEntries int           // 0: no near cache
	MaxAge     time.Duration // the longest a copy is served when the store cannot tell this process about other writers' changes
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
// failed store calls in a row, the cache skips the store for CoolDown (the
// loader serves every call, counted in [Stats].StoreSkips), then lets one
// call probe it. A request stops using the store after its first failure,
// so Failures counts failed requests, plus failed background writes.
type BreakerOptions struct {
	// Failures is how many consecutive store failures open the breaker.
	// Zero turns the breaker off.
	Failures int

	// CoolDown is how long the store is skipped. Default 5s.
	CoolDown time.Duration
}

// LockOptions configures the lease taken on a miss.
//
// On a miss, one flight in the fleet takes the key's lease (an entry in
// the key itself) and loads; the others wait for the value to land. The
// holder keeps its lease alive while it loads (with a store that can
// compare-and-swap), so a load of any length up to LoadTimeout runs once;
// a holder that dies frees the key within TTL. A waiter wakes when the
// store tells it the key changed (store.Notifier), or else polls it.
type LockOptions struct {
	// Disabled turns the lease off: only the in-process single-flight
	// remains, so each process loads once per key.
	Disabled bool

	// TTL is how long a lease lives without being kept alive: how soon a
	// key whose holder crashed can be loaded again. Default 5s.
	TTL time.Duration

	// MaxWait is how long a flight waits on another's live lease before
	// it loads anyway. Default: LoadTimeout; it may not be longer.
	MaxWait time.Duration

	// Tuning: how waiters watch the key. The defaults suit most stores.

	// PollInterval is the first wait between polls when the store cannot
	// notify. Default 1ms.
	PollInterval time.Duration

	// MaxPollInterval caps the backoff between those polls: a waiter
	// returns at most about this long after the value lands. Default 3ms.
	MaxPollInterval time.Duration

	// NotifiedPollInterval is how often a waiter still polls when the
	// store notifies changes: a safety net for a lease that expires
	// without a notification. Default TTL/10.
	NotifiedPollInterval time.Duration
}

// Defaults for zero [Options] fields.
const (
	DefaultTTL              = 5 * time.Minute
	DefaultStoreTimeout     = time.Second
	DefaultLoadTimeout      = 30 * time.Second
	DefaultLockTTL          = 5 * time.Second
	DefaultPollInterval     = time.Millisecond
	DefaultMaxPollInterval  = 3 * time.Millisecond
	DefaultFailSafeThrottle = 10 * time.Second
	DefaultBreakerCoolDown  = 5 * time.Second
	DefaultMaxRefreshes     = 64
	DefaultNearMaxAge       = time.Second
)

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
	if isNil(st) {
		return nil, fmt.Errorf("%w: nil store (%T)", ErrInvalidOptions, st)
	}
	c := &config[K, V]{}
	if opts != nil {
		c.Options = *opts
	}
	// An interface holding a nil pointer is as good as none: not a
	// Recorder or Codec to call, and crash on, at the first event.
	if c.Recorder != nil && isNil(c.Recorder) {
		c.Recorder = nil
	}
	if c.Codec != nil && isNil(c.Codec) {
		c.Codec = nil
	}
	if l, ok := st.(store.Limiter); ok {
		c.limits = l.Limits()
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	o := &c.Options
	setDefault(&o.TTL, DefaultTTL)
	setDefault(&o.LoadTimeout, DefaultLoadTimeout)
	setDefault(&o.StoreTimeout, min(DefaultStoreTimeout, o.LoadTimeout/2))
	setDefault(&o.Lock.TTL, DefaultLockTTL)
	setDefault(&o.Lock.MaxWait, o.LoadTimeout)
	setDefault(&o.Lock.PollInterval, DefaultPollInterval)
	setDefault(&o.Lock.MaxPollInterval, max(DefaultMaxPollInterval, o.Lock.PollInterval))
	setDefault(&o.Lock.NotifiedPollInterval, o.Lock.TTL/10)
	setDefault(&o.FailSafe.Throttle, DefaultFailSafeThrottle)
	setDefault(&o.Breaker.CoolDown, DefaultBreakerCoolDown)
	setDefault(&o.MaxRefreshes, DefaultMaxRefreshes)
	if o.Near.MaxEntries > 0 {
		setDefault(&o.Near.MaxAge, DefaultNearMaxAge)
	}
	if o.Codec == nil {
		if err := jsonEncodable(reflect.TypeFor[V]()); err != nil {
			return nil, fmt.Errorf("%w: value type %v cannot be encoded as JSON (%v); set Options.Codec", ErrInvalidOptions, reflect.TypeFor[V](), err)
		}
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
	// Checked after defaults: a store's MaxTTL also catches a default, and
	// MaxWait's default follows LoadTimeout.
	if err := c.validateFilled(); err != nil {
		return nil, err
	}
	return c, nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
}

func (c *config[K, V]) validate() error {
	o := &c.Options
	if strings.IndexByte(o.Namespace, 0) >= 0 {
		return invalid("Namespace %q contains a NUL byte", o.Namespace)
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
		{"Lock.MaxWait", o.Lock.MaxWait},
		{"Lock.PollInterval", o.Lock.PollInterval},
		{"Lock.MaxPollInterval", o.Lock.MaxPollInterval},
		{"Lock.NotifiedPollInterval", o.Lock.NotifiedPollInterval},
		{"StaleWhileRevalidate", o.StaleWhileRevalidate},
		{"FailSafe.MaxStale", o.FailSafe.MaxStale},
		{"FailSafe.Throttle", o.FailSafe.Throttle},
		{"SoftLoadTimeout", o.SoftLoadTimeout},
		{"Breaker.CoolDown", o.Breaker.CoolDown},
		{"Near.MaxAge", o.Near.MaxAge},
	} {
		if d.v < 0 {
			return invalid("%s is negative (%v)", d.name, d.v)
		}
	}
	switch {
	case o.EarlyRefresh < 0 || math.IsNaN(o.EarlyRefresh) || math.IsInf(o.EarlyRefresh, 0):
		return invalid("EarlyRefresh must be a finite β >= 0 (got %v)", o.EarlyRefresh)
	case o.Breaker.Failures < 0:
		return invalid("Breaker.Failures is negative (%d)", o.Breaker.Failures)
	case o.MaxRefreshes < 0:
		return invalid("MaxRefreshes is negative (%d)", o.MaxRefreshes)
	case o.Near.MaxEntries < 0:
		return invalid("Near.MaxEntries is negative (%d)", o.Near.MaxEntries)
	case o.Lock.MaxPollInterval > 0 && o.Lock.PollInterval > o.Lock.MaxPollInterval:
		return invalid("Lock.PollInterval (%v) is above Lock.MaxPollInterval (%v)", o.Lock.PollInterval, o.Lock.MaxPollInterval)
	}
	// Options that would do nothing are mistakes: say so now, not in an
	// outage when the option was meant to help.
	switch {
	case o.FailSafe.Throttle > 0 && o.FailSafe.MaxStale == 0:
		return invalid("FailSafe.Throttle is set but FailSafe.MaxStale is zero, so fail-safe is off")
	case o.SoftLoadTimeout > 0 && o.FailSafe.MaxStale == 0:
		return invalid("SoftLoadTimeout needs FailSafe.MaxStale: it returns the expired value fail-safe keeps, and there is none " +
			"(StaleWhileRevalidate alone never waits for a load, so it has no use for it)")
	case o.Breaker.CoolDown > 0 && o.Breaker.Failures == 0:
		return invalid("Breaker.CoolDown is set but Breaker.Failures is zero, so the breaker is off")
	case o.MaxRefreshes > 0 && o.StaleWhileRevalidate == 0 && o.EarlyRefresh == 0:
		return invalid("MaxRefreshes is set but neither StaleWhileRevalidate nor EarlyRefresh refreshes in the background")
	case o.Near.MaxAge > 0 && o.Near.MaxEntries == 0:
		return invalid("Near.MaxAge is set but Near.MaxEntries is zero, so the near cache is off")
	case o.Lock.Disabled && (o.Lock.TTL != 0 || o.Lock.MaxWait != 0 || o.Lock.PollInterval != 0 ||
		o.Lock.MaxPollInterval != 0 || o.Lock.NotifiedPollInterval != 0):
		return invalid("Lock.Disabled is set along with other Lock options, which then do nothing")
	}
	return nil
}

// validateFilled checks what can only be checked with defaults filled in.
func (c *config[K, V]) validateFilled() error {
	o := &c.Options
	switch {
	case o.StoreTimeout >= o.LoadTimeout:
		return invalid("StoreTimeout (%v) is not below LoadTimeout (%v): a hung store would end every load before it began", o.StoreTimeout, o.LoadTimeout)
	case o.Lock.MaxWait > o.LoadTimeout:
		return invalid("Lock.MaxWait (%v) is above LoadTimeout (%v): a waiter's callers would all have timed out", o.Lock.MaxWait, o.LoadTimeout)
	case o.SoftLoadTimeout >= o.LoadTimeout:
		if o.SoftLoadTimeout > 0 {
			return invalid("SoftLoadTimeout (%v) is not below LoadTimeout (%v), so it never fires", o.SoftLoadTimeout, o.LoadTimeout)
		}
	}
	l := c.limits
	if l.MaxTTL <= 0 {
		return nil
	}
	type check struct {
		name string
		v    time.Duration
	}
	checks := []check{{"TTL+TTLJitter+stale window", o.TTL + o.TTLJitter + c.staleWindow()}, {"Lock.TTL", o.Lock.TTL}}
	if o.NegativeTTL > 0 {
		checks = append(checks, check{"NegativeTTL+its jitter", o.NegativeTTL + c.negativeJitter()})
	}
	for _, d := range checks {
		if d.v > l.MaxTTL {
			return invalid("%s (%v) is above the store's longest TTL (%v)", d.name, d.v, l.MaxTTL)
		}
	}
	return nil
}

// negativeJitter is TTLJitter scaled to NegativeTTL, so a 30 s not-found
// is not stretched by a jitter meant for a 10 min value.
func (c *config[K, V]) negativeJitter() time.Duration {
	if c.TTLJitter <= 0 || c.TTL <= 0 {
		return 0
	}
	return time.Duration(float64(c.TTLJitter) * float64(c.NegativeTTL) / float64(c.TTL))
}

// isNil reports whether v is nil or an interface holding a nil pointer,
// map, slice, func or chan: a store New could only crash on later.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// jsonEncodable reports why encoding/json could never encode a value of
// type t (a chan, a func, a complex number, reachable through exported
// fields), or nil. Types with their own marshalers, and interfaces, whose
// dynamic values are unknown here, pass.
func jsonEncodable(t reflect.Type) error {
	return jsonEncodableSeen(t, map[reflect.Type]bool{})
}

func jsonEncodableSeen(t reflect.Type, seen map[reflect.Type]bool) error {
	if seen[t] {
		return nil
	}
	seen[t] = true
	if t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) ||
		t.Implements(textMarshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		return nil
	}
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.Complex64, reflect.Complex128, reflect.UnsafePointer:
		return fmt.Errorf("%v is a %v", t, t.Kind())
	case reflect.Interface:
		if t.NumMethod() > 0 {
			// It encodes, but encoding/json cannot decode into it: every
			// entry would be a miss.
			return fmt.Errorf("%v is an interface with methods, which JSON cannot decode into", t)
		}
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return jsonEncodableSeen(t.Elem(), seen)
	case reflect.Map:
		switch k := t.Key(); {
		case k.Kind() == reflect.String, k.Implements(textMarshaler),
			k.Kind() >= reflect.Int && k.Kind() <= reflect.Uintptr:
		default:
			return fmt.Errorf("map key type %v is not a string, an integer or a TextMarshaler", k)
		}
		return jsonEncodableSeen(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() && !f.Anonymous || f.Tag.Get("json") == "-" {
				continue
			}
			if err := jsonEncodableSeen(f.Type, seen); err != nil {
				return fmt.Errorf("field %s: %w", f.Name, err)
			}
		}
	}
	return nil
}

// errorsIsAny is errors.Is for a target that may be nil.
func errorsIsAny(err, target error) bool { return target != nil && errors.Is(err, target) }
