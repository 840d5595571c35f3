package readthrough_test

// Contracts users rely on: each resilience option as its doc comment
// states it, validation in New, the sentinels callers test for.

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	rt "github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/store"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFailSafeValueIsStaleForEveryCaller: a fail-safe value used to be
// labelled SourceShared for 9 of 10 callers in a process that waited on
// another process's lease.
func TestFailSafeValueIsStaleForEveryCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		opts := &rt.Options[string, string]{TTL: 10 * time.Second, FailSafe: rt.FailSafeOptions{MaxStale: time.Hour}}
		a, b := newCache(t, mem, opts), newCache(t, mem, opts)
		_, err := a.GetOrLoad(context.Background(), "k", echo)
		require.NoError(t, err)
		time.Sleep(11 * time.Second)

		release := make(chan struct{})
		failing := func(context.Context, string) (string, error) { <-release; return "", errors.New("upstream down") }
		go func() { _, _ = a.GetOrLoad(context.Background(), "k", failing) }() // a leases and loads
		synctest.Wait()
		sources := make(chan rt.Source, 10)
		for range 10 {
			go func() {
				r, err := b.Fetch(context.Background(), "k", failing) // b waits on a's lease
				assert.NoError(t, err)
				assert.Equal(t, "value of k", r.Value)
				sources <- r.Source
			}()
		}
		synctest.Wait()
		close(release)
		for range 10 {
			assert.Equal(t, rt.SourceStale, <-sources)
		}
	})
}

// TestFailSafeThrottleHoldsWithStaleWhileRevalidate: with both options on,
// a failed background refresh used to leave the value as it was, so every
// call in the stale window refreshed again: 63 upstream calls in 90s
// instead of about one per Throttle.
func TestFailSafeThrottleHoldsWithStaleWhileRevalidate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[string, string]{
			TTL:                  5 * time.Second,
			StaleWhileRevalidate: time.Hour,
			FailSafe:             rt.FailSafeOptions{MaxStale: time.Hour, Throttle: 10 * time.Second},
		})
		_, err := c.GetOrLoad(context.Background(), "k", echo)
		require.NoError(t, err)
		var calls atomic.Int32
		failing := func(context.Context, string) (string, error) {
			calls.Add(1)
			return "", errors.New("upstream down")
		}
		time.Sleep(5 * time.Second)
		for range 90 { // a call a second for 90s
			r, err := c.Fetch(context.Background(), "k", failing)
			require.NoError(t, err)
			assert.Equal(t, rt.SourceStale, r.Source)
			synctest.Wait()
			time.Sleep(time.Second)
		}
		assert.InDelta(t, 9, calls.Load(), 1, "about one upstream call per Throttle")
	})
}

// TestStaleWindowsAreTheReadersOwn: a reader with no resilience options used
// to serve a 30-minute-old value instead of its loader's error, because the
// writer had stale-while-revalidate on: a rolling deploy that turned SWR
// on made old processes swallow upstream errors.
func TestStaleWindowsAreTheReadersOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memstore.New()
		writer := newCache(t, mem, &rt.Options[string, string]{TTL: time.Minute, StaleWhileRevalidate: time.Hour})
		plain := newCache(t, mem, &rt.Options[string, string]{TTL: time.Minute})
		_, err := writer.GetOrLoad(context.Background(), "k", echo)
		require.NoError(t, err)
		time.Sleep(31 * time.Minute)

		boom := errors.New("upstream down")
		_, err = plain.GetOrLoad(context.Background(), "k", func(context.Context, string) (string, error) { return "", boom })
		assert.ErrorIs(t, err, boom, "a reader without stale windows never serves a stale value")
		_, ok, err := plain.Peek(context.Background(), "k")
		require.NoError(t, err)
		assert.False(t, ok, "not even to Peek")

		r, err := writer.Fetch(context.Background(), "k", echo)
		require.NoError(t, err)
		assert.Equal(t, rt.SourceStale, r.Source, "the writer, whose options allow it, still does")
	})
}

// TestExpiresOfStaleResultsIsInThePast: Result.Expires is when the value
// stopped being fresh, so time.Until(r.Expires) is a usable max-age: zero or
// less for anything stale, re-armed or not.
func TestExpiresOfStaleResultsIsInThePast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[string, string]{
			TTL: 10 * time.Second, FailSafe: rt.FailSafeOptions{MaxStale: time.Hour, Throttle: time.Minute},
		})
		r, err := c.Fetch(context.Background(), "k", echo)
		require.NoError(t, err)
		freshUntil := r.Expires
		assert.Equal(t, time.Now().Add(10*time.Second), freshUntil)
		time.Sleep(20 * time.Second)

		failing := func(context.Context, string) (string, error) { return "", errors.New("down") }
		r, err = c.Fetch(context.Background(), "k", failing) // fail-safe: served stale, re-armed
		require.NoError(t, err)
		assert.Equal(t, rt.SourceStale, r.Source)
		assert.Equal(t, freshUntil, r.Expires)
		synctest.Wait()
		r, err = c.Fetch(context.Background(), "k", failing) // the re-armed value, within the throttle
		require.NoError(t, err)
		assert.Equal(t, rt.SourceStale, r.Source)
		assert.Equal(t, freshUntil, r.Expires, "re-arming does not make it fresh again")
		assert.Equal(t, 20*time.Second, r.Age)
	})
}

// TestEarlyRefreshFiresForValuesWrittenBySet: a value written by Set has no
// load duration (Δ = 0), so XFetch never fired for it.
func TestEarlyRefreshFiresForValuesWrittenBySet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Δ is 1% of TTL here (100ms, no load yet); β = 10 makes a refresh
		// before the last call all but certain (XFetch's tail).
		c := newCache(t, memstore.New(), &rt.Options[string, string]{TTL: 10 * time.Second, EarlyRefresh: 10})
		require.NoError(t, c.Set(context.Background(), "hot", "written"))
		l := countLoads(echo)
		for range 100 { // a call every 100ms up to expiry
			time.Sleep(100 * time.Millisecond)
			r, err := c.Fetch(context.Background(), "hot", l.load)
			require.NoError(t, err)
			require.NotEqual(t, rt.SourceLoader, r.Source, "a caller waited on a load at %v", time.Now())
			synctest.Wait()
		}
		assert.Positive(t, c.Stats().Refreshes, "refreshed before it expired")
	})
}

// TestNegativeTTLJitterIsProportional: TTLJitter used to be added whole to
// a short NegativeTTL (a minute of jitter on a 30s not-found).
func TestNegativeTTLJitterIsProportional(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, memstore.New(), &rt.Options[int, string]{
			TTL: 10 * time.Minute, TTLJitter: time.Minute, NegativeTTL: 30 * time.Second,
		})
		start := time.Now()
		missing := func(context.Context, int) (string, error) { return "", rt.ErrNotFound }
		for k := range 50 {
			_, err := c.GetOrLoad(context.Background(), k, missing)
			require.ErrorIs(t, err, rt.ErrNotFound)
		}
		time.Sleep(33 * time.Second) // 30s + 30s·(1min/10min)
		reloaded := countLoads(missing)
		for k := range 50 {
			_, _ = c.GetOrLoad(context.Background(), k, reloaded.load)
		}
		assert.Equal(t, 50, reloaded.n(), "every not-found expired within NegativeTTL plus its share of the jitter (%v)", time.Since(start))
	})
}

// TestSentinelsCallersTestFor: the errors a caller must tell apart are
// exported.
func TestSentinelsCallersTestFor(t *testing.T) {
	t.Parallel()
	c := newCache[string, string](t, memstore.New(), nil)
	_, err := c.GetOrLoad(t.Context(), "k", nil)
	assert.ErrorIs(t, err, rt.ErrNilLoader)

	fs := storetest.NewFaultyStore(memstore.New())
	b := newCache(t, fs, &rt.Options[string, string]{Breaker: rt.BreakerOptions{Failures: 1}})
	fs.InjectAll(storetest.Fault{})
	_, _ = b.GetOrLoad(t.Context(), "k", echo) // opens it
	assert.ErrorIs(t, b.Set(t.Context(), "k", "v"), rt.ErrBreakerOpen)
	assert.ErrorIs(t, b.Delete(t.Context(), "k"), rt.ErrBreakerOpen)
}

type withChan struct {
	Name string
	C    chan int
}

type withHiddenFunc struct {
	Name string
	f    func() // unexported: encoding/json never sees it
	G    func() `json:"-"`
}

type marshals struct{ C chan int }

func (marshals) MarshalJSON() ([]byte, error) { return []byte(`{}`), nil }

// TestNewRejectsWhatCanNeverWork: options that do nothing or conflict, a
// typed-nil store, value types the codec can never encode.
func TestNewRejectsWhatCanNeverWork(t *testing.T) {
	t.Parallel()
	s := memstore.New()
	for _, tc := range []struct {
		name string
		opts *rt.Options[string, int]
		want string
	}{
		{"SoftLoadTimeout with no fail-safe", &rt.Options[string, int]{SoftLoadTimeout: time.Second}, "SoftLoadTimeout needs FailSafe"},
		{"SoftLoadTimeout with SWR alone", &rt.Options[string, int]{SoftLoadTimeout: time.Second, StaleWhileRevalidate: time.Minute}, "SoftLoadTimeout needs FailSafe"},
		{"SoftLoadTimeout not below LoadTimeout", &rt.Options[string, int]{SoftLoadTimeout: time.Minute, LoadTimeout: time.Minute,
			FailSafe: rt.FailSafeOptions{MaxStale: time.Hour}}, "never fires"},
		{"MaxWait above LoadTimeout", &rt.Options[string, int]{Lock: rt.LockOptions{MaxWait: time.Minute}}, "Lock.MaxWait"},
		{"MaxWait above a set LoadTimeout", &rt.Options[string, int]{LoadTimeout: time.Second, Lock: rt.LockOptions{MaxWait: 2 * time.Second}}, "Lock.MaxWait"},
		{"Throttle without MaxStale", &rt.Options[string, int]{FailSafe: rt.FailSafeOptions{Throttle: time.Second}}, "FailSafe.Throttle"},
		{"CoolDown without Failures", &rt.Options[string, int]{Breaker: rt.BreakerOptions{CoolDown: time.Second}}, "Breaker.CoolDown"},
		{"MaxRefreshes without refreshes", &rt.Options[string, int]{MaxRefreshes: 3}, "MaxRefreshes"},
		{"Near.MaxAge without MaxEntries", &rt.Options[string, int]{Near: rt.NearOptions{MaxAge: time.Second}}, "Near.MaxAge"},
		{"negative Near.MaxAge", &rt.Options[string, int]{Near: rt.NearOptions{MaxEntries: 10, MaxAge: -1}}, "Near.MaxAge"},
		{"negative Near.MaxEntries", &rt.Options[string, int]{Near: rt.NearOptions{MaxEntries: -1}}, "Near.MaxEntries"},
		{"Lock options with the lock off", &rt.Options[string, int]{Lock: rt.LockOptions{Disabled: true, TTL: time.Second}}, "Lock.Disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rt.New(s, tc.opts)
			require.ErrorIs(t, err, rt.ErrInvalidOptions)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	var typedNil *memstore.Store
	_, err := rt.New[string, int](typedNil, nil)
	require.ErrorIs(t, err, rt.ErrInvalidOptions)
	assert.Contains(t, err.Error(), "nil store")

	_, err = rt.New[string, chan int](s, nil)
	assert.ErrorIs(t, err, rt.ErrInvalidOptions, "a chan")
	_, err = rt.New[string, func()](s, nil)
	assert.ErrorIs(t, err, rt.ErrInvalidOptions, "a func")
	_, err = rt.New[string, withChan](s, nil)
	assert.ErrorContains(t, err, "field C", "a chan in an exported field")
	_, err = rt.New[string, map[complex64]int](s, nil)
	assert.ErrorIs(t, err, rt.ErrInvalidOptions, "a map key JSON cannot encode")
	_, err = rt.New[string, []withChan](s, nil)
	assert.ErrorIs(t, err, rt.ErrInvalidOptions, "through a slice")

	for name, f := range map[string]func() error{
		"unexported and ignored funcs":  func() error { _, err := rt.New[string, withHiddenFunc](s, nil); return err },
		"a type with its own marshaler": func() error { _, err := rt.New[string, marshals](s, nil); return err },
		"a chan with a user codec": func() error {
			_, err := rt.New[string, chan int](s, &rt.Options[string, chan int]{Codec: chanCodec{}})
			return err
		},
		"an interface":     func() error { _, err := rt.New[string, any](s, nil); return err },
		"a recursive type": func() error { _, err := rt.New[string, tree](s, nil); return err },
		"the options that do fit": func() error {
			_, err := rt.New(s, &rt.Options[string, int]{SoftLoadTimeout: time.Second, FailSafe: rt.FailSafeOptions{MaxStale: time.Hour, Throttle: time.Minute}, Breaker: rt.BreakerOptions{Failures: 3, CoolDown: time.Second}, MaxRefreshes: 3, EarlyRefresh: 1, Near: rt.NearOptions{MaxEntries: 10, MaxAge: time.Second}})
			return err
		},
	} {
		assert.NoError(t, f(), name)
	}
}

type tree struct {
	Name     string
	Children []*tree
}

type chanCodec struct{}

func (chanCodec) Marshal(chan int) ([]byte, error)   { return []byte{}, nil }
func (chanCodec) Unmarshal([]byte) (chan int, error) { return make(chan int), nil }

// logRecorder captures log records, for asserting what is logged.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.records = append(l.records, r.Clone())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler { return &attrHandler{l, as} }
func (l *logRecorder) WithGroup(string) slog.Handler         { return l }

type attrHandler struct {
	*logRecorder
	attrs []slog.Attr
}

func (h *attrHandler) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	return h.logRecorder.Handle(ctx, r)
}

// attrs returns the records' messages with their attributes, as text.
func (l *logRecorder) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b bytes.Buffer
	for _, r := range l.records {
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			b.WriteString(" " + a.Key + "=" + a.Value.String())
			return true
		})
		b.WriteString("\n")
	}
	return b.String()
}

// TestTwoValueTypesOnOneNamespaceAreReported: two caches of different value
// types sharing a namespace overwrite each other forever; it used to show
// only as DecodeErrors. Now a rate-limited warning names the namespace.
func TestTwoValueTypesOnOneNamespaceAreReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type user struct{ Name string }
		type product struct{ Name string }
		logs := &logRecorder{}
		s := memstore.New()
		users := newCache(t, s, &rt.Options[int, user]{Namespace: "shared"})
		products := newCache(t, s, &rt.Options[int, product]{Namespace: "shared", Logger: slog.New(logs)})
		for i := range 5 {
			require.NoError(t, users.Set(context.Background(), i, user{"ada"}))
			_, err := products.GetOrLoad(context.Background(), i, func(context.Context, int) (product, error) { return product{"widget"}, nil })
			require.NoError(t, err)
		}
		out := logs.text()
		assert.Equal(t, 1, strings.Count(out, "another value type"), "one warning, rate-limited:\n%s", out)
		assert.Contains(t, out, "namespace=shared")
		assert.Contains(t, out, "key=shared:0")
	})
}

// TestSetTTLChoosesTheValuesTTL: a loader's SetTTL replaces TTL for the
// value it returns (a batch loader's, for every value of the call),
// clamped to the store's longest TTL; a not-found keeps NegativeTTL.
func TestSetTTLChoosesTheValuesTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, limited{memstore.New(), store.Limits{MaxTTL: time.Hour}}, &rt.Options[string, string]{TTL: time.Minute, NegativeTTL: time.Second})
		r, err := c.Fetch(context.Background(), "short", func(ctx context.Context, _ string) (string, error) {
			assert.True(t, rt.SetTTL(ctx, 5*time.Second))
			return "v", nil
		})
		require.NoError(t, err)
		assert.Equal(t, time.Now().Add(5*time.Second), r.Expires)
		r, err = c.Fetch(context.Background(), "long", func(ctx context.Context, _ string) (string, error) {
			rt.SetTTL(ctx, 48*time.Hour)
			return "v", nil
		})
		require.NoError(t, err)
		assert.Equal(t, time.Now().Add(time.Hour), r.Expires, "clamped to the store's MaxTTL")
		assert.False(t, rt.SetTTL(context.Background(), time.Second), "not a load's context")

		outs, err := c.FetchMany(context.Background(), []string{"a", "b"}, func(ctx context.Context, keys []string) (map[string]string, error) {
			rt.SetTTL(ctx, 10*time.Second)
			return map[string]string{"a": "1", "b": "2"}, nil
		})
		require.NoError(t, err)
		for _, k := range []string{"a", "b"} {
			assert.Equal(t, time.Now().Add(10*time.Second), outs[k].Expires, k)
		}
		time.Sleep(5 * time.Second)
		l := countLoads(echo)
		r, _ = c.Fetch(context.Background(), "short", l.load)
		assert.Equal(t, rt.SourceLoader, r.Source, "expired at the loader's TTL, not TTL")
	})
}

// TestPeekNeverLoadsNorLeases: Peek reads; it never calls a loader, takes
// a lease or starts a refresh, whatever the key holds.
func TestPeekNeverLoadsNorLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := storetest.NewFaultyStore(memstore.New())
		c := newCache(t, fs, &rt.Options[string, string]{TTL: 10 * time.Second, StaleWhileRevalidate: time.Minute, NegativeTTL: time.Minute})
		_, _ = c.GetOrLoad(context.Background(), "v", echo)
		_, _ = c.GetOrLoad(context.Background(), "gone", func(context.Context, string) (string, error) { return "", rt.ErrNotFound })
		synctest.Wait()
		fs.ResetCalls()
		r, ok, err := c.Peek(context.Background(), "v")
		assert.True(t, ok)
		assert.NoError(t, err)
		assert.Equal(t, rt.SourceCache, r.Source)
		_, ok, err = c.Peek(context.Background(), "gone")
		assert.True(t, ok)
		assert.ErrorIs(t, err, rt.ErrNotFound)
		_, ok, err = c.Peek(context.Background(), "absent")
		assert.False(t, ok)
		assert.NoError(t, err)
		time.Sleep(11 * time.Second)
		r, ok, _ = c.Peek(context.Background(), "v")
		assert.True(t, ok)
		assert.Equal(t, rt.SourceStale, r.Source, "within this Cache's stale window")
		synctest.Wait()
		assert.Equal(t, fs.Calls(storetest.OpGet), fs.TotalCalls(), "only reads: no lease, no write, no refresh")
		assert.Zero(t, c.Stats().Loads-2)
	})
}

// TestLogLinesCarryStableAttributes: store errors are logged with the
// attributes users filter on: namespace, key, op, err.
func TestLogLinesCarryStableAttributes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &logRecorder{}
		fs := storetest.NewFaultyStore(memstore.New())
		fs.InjectAll(storetest.Fault{})
		c := newCache(t, fs, &rt.Options[string, string]{Namespace: "product", Logger: slog.New(logs)})
		_, _ = c.GetOrLoad(context.Background(), "42", echo)
		out := logs.text()
		for _, attr := range []string{"namespace=product", "key=product:42", "op=get", "err="} {
			assert.Contains(t, out, attr)
		}
	})
}
