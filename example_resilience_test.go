package readthrough_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/storetest"
)

// counter is a loader whose answers change with each call.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) next() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n
}

// After TTL, a value is served stale for StaleWhileRevalidate while one
// background refresh replaces it: nobody waits for the upstream.
func ExampleOptions_staleWhileRevalidate() {
	ctx := context.Background()
	c, _ := readthrough.New[string, string](memstore.New(), &readthrough.Options[string, string]{
		TTL:                  200 * time.Millisecond,
		StaleWhileRevalidate: time.Minute,
	})
	var calls counter
	load := func(ctx context.Context, k string) (string, error) { return fmt.Sprintf("v%d", calls.next()), nil }

	_, _ = c.GetOrLoad(ctx, "k", load)
	time.Sleep(250 * time.Millisecond) // expired
	r, _ := c.Fetch(ctx, "k", load)
	fmt.Println(r.Value, r.Source)
	for { // Peek never loads: wait for the background refresh to land
		if r, ok, _ := c.Peek(ctx, "k"); ok && r.Source != readthrough.SourceStale {
			break
		}
		time.Sleep(time.Millisecond)
	}
	r, _ = c.Fetch(ctx, "k", load)
	fmt.Println(r.Value, r.Source)
	// Output:
	// v1 stale
	// v2 cache
}

// With EarlyRefresh (XFetch's β), a hot key is refreshed in the
// background shortly before it expires, so its callers never wait.
func ExampleOptions_earlyRefresh() {
	ctx := context.Background()
	c, _ := readthrough.New[string, string](memstore.New(), &readthrough.Options[string, string]{
		TTL:          200 * time.Millisecond,
		EarlyRefresh: 1,
	})
	load := func(ctx context.Context, k string) (string, error) {
		time.Sleep(20 * time.Millisecond) // recorded: later refreshes start about this much early, or more
		return "report", nil
	}
	for range 400 { // a hot key, over several TTLs
		_, _ = c.GetOrLoad(ctx, "hot", load)
		time.Sleep(2 * time.Millisecond)
	}
	_ = c.Close()
	fmt.Println("refreshed in the background:", c.Stats().Refreshes > 0)
	// Output: refreshed in the background: true
}

// With FailSafe, a failed reload serves the expired value instead of the
// error, and leaves the upstream alone for Throttle.
func ExampleOptions_failSafe() {
	ctx := context.Background()
	c, _ := readthrough.New[string, string](memstore.New(), &readthrough.Options[string, string]{
		TTL:      20 * time.Millisecond,
		FailSafe: readthrough.FailSafeOptions{MaxStale: time.Hour, Throttle: time.Minute},
	})
	_, _ = c.GetOrLoad(ctx, "rates", func(context.Context, string) (string, error) { return "EUR 1.08", nil })
	time.Sleep(30 * time.Millisecond)

	down := func(context.Context, string) (string, error) { return "", errors.New("upstream 503") }
	for range 3 {
		r, err := c.Fetch(ctx, "rates", down)
		fmt.Println(r.Value, r.Source, err)
	}
	fmt.Println("loads:", c.Stats().Loads)
	// Output:
	// EUR 1.08 stale <nil>
	// EUR 1.08 stale <nil>
	// EUR 1.08 stale <nil>
	// loads: 2
}

// With SoftLoadTimeout, a slow reload does not hold callers up when a
// stale value is at hand: they get it, and the reload lands later.
func ExampleOptions_softLoadTimeout() {
	ctx := context.Background()
	store := memstore.New()
	opts := func(ttl time.Duration) *readthrough.Options[string, string] {
		return &readthrough.Options[string, string]{
			TTL:             ttl,
			FailSafe:        readthrough.FailSafeOptions{MaxStale: time.Hour},
			SoftLoadTimeout: 10 * time.Millisecond,
		}
	}
	// Another writer left a value that has just expired.
	other, _ := readthrough.New(store, opts(time.Millisecond))
	_, _ = other.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "old", nil })
	time.Sleep(5 * time.Millisecond)

	c, _ := readthrough.New(store, opts(time.Hour))
	slow := func(context.Context, string) (string, error) { time.Sleep(200 * time.Millisecond); return "new", nil }
	r, _ := c.Fetch(ctx, "k", slow)
	fmt.Println(r.Value, r.Source)
	time.Sleep(400 * time.Millisecond) // the slow load lands
	r, _ = c.Fetch(ctx, "k", slow)
	fmt.Println(r.Value, r.Source)
	// Output:
	// old stale
	// new cache
}

// The circuit breaker stops calling a failing store: after Failures errors
// in a row, the store is skipped for CoolDown and the loader serves.
func ExampleOptions_breaker() {
	ctx := context.Background()
	store := storetest.NewFaultyStore(memstore.New())
	store.InjectAll(storetest.Fault{Err: errors.New("connection refused")})
	c, _ := readthrough.New[string, string](store, &readthrough.Options[string, string]{
		Breaker: readthrough.BreakerOptions{Failures: 2, CoolDown: time.Minute},
	})
	for range 10 {
		_, _ = c.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "v", nil })
	}
	st := c.Stats()
	fmt.Println("store errors:", st.StoreErrors, "skipped:", st.StoreSkips, "opens:", st.BreakerOpens)
	// Output: store errors: 2 skipped: 8 opens: 1
}
