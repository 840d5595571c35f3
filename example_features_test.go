package readthrough_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
)

// With a near cache, repeat hits are answered from process memory, with no
// store call and no decode. A write by any Cache over the store evicts the
// copy at once (memstore tells every Cache over it; redisstore uses Redis's
// server-assisted invalidation).
func ExampleNearOptions() {
	ctx := context.Background()
	store := memstore.New()
	opts := &readthrough.Options[int, string]{Namespace: "product", Near: readthrough.NearOptions{MaxEntries: 10_000}}
	c, _ := readthrough.New(store, opts)
	other, _ := readthrough.New(store, opts) // another process

	load := func(context.Context, int) (string, error) { return "widget", nil }
	for range 3 {
		r, _ := c.Fetch(ctx, 42, load)
		fmt.Println(r.Value, r.Source)
	}
	_ = other.Set(ctx, 42, "gadget")
	r, _ := c.Fetch(ctx, 42, load)
	fmt.Println(r.Value, r.Source)
	// Output:
	// widget loader
	// widget near
	// widget near
	// gadget cache
}

// A batch reads every key at once and calls the loader once, with only the
// keys the cache does not hold: the dataloader pattern over a
// WHERE id IN (...).
func ExampleCache_GetOrLoadMany() {
	ctx := context.Background()
	c, _ := readthrough.New[int, string](memstore.New(), &readthrough.Options[int, string]{NegativeTTL: time.Minute})
	_ = c.Set(ctx, 1, "one")
	_ = c.Set(ctx, 2, "two")

	byIDs := func(_ context.Context, ids []int) (map[int]string, error) {
		fmt.Println("loading", ids)
		rows := map[int]string{3: "three", 4: "four"} // 5 does not exist
		out := map[int]string{}
		for _, id := range ids {
			if v, ok := rows[id]; ok {
				out[id] = v
			}
		}
		return out, nil
	}
	m, err := c.GetOrLoadMany(ctx, []int{1, 2, 3, 4, 5}, byIDs)
	ids := slices.Sorted(func(yield func(int) bool) {
		for id := range m {
			if !yield(id) {
				return
			}
		}
	})
	for _, id := range ids {
		fmt.Println(id, m[id])
	}
	fmt.Println(err)
	// Output:
	// loading [3 4 5]
	// 1 one
	// 2 two
	// 3 three
	// 4 four
	// <nil>
}

// FetchMany says, key by key, where each answer came from, or why there is
// none.
func ExampleCache_FetchMany() {
	ctx := context.Background()
	c, _ := readthrough.New[int, string](memstore.New(), nil)
	_ = c.Set(ctx, 1, "one")
	outs, _ := c.FetchMany(ctx, []int{1, 2, 3}, func(_ context.Context, ids []int) (map[int]string, error) {
		return map[int]string{2: "two"}, nil // 3 is not found
	})
	for _, id := range []int{1, 2, 3} {
		o := outs[id]
		fmt.Printf("%d: %q %v %v\n", id, o.Value, o.Source, o.Err)
	}
	// Output:
	// 1: "one" cache <nil>
	// 2: "two" loader <nil>
	// 3: "" loader readthrough: not found
}

// Peek reads what the cache holds without ever loading or taking a lease:
// for an admin page, a debug endpoint, or a test.
func ExampleCache_Peek() {
	ctx := context.Background()
	c, _ := readthrough.New[string, string](memstore.New(), nil)
	_, ok, _ := c.Peek(ctx, "k")
	fmt.Println("before:", ok)
	_, _ = c.GetOrLoad(ctx, "k", func(context.Context, string) (string, error) { return "v", nil })
	r, ok, _ := c.Peek(ctx, "k")
	fmt.Println("after:", ok, r.Value, r.Source)
	// Output:
	// before: false
	// after: true v cache
}

// A loader that knows how long its answer stays good (an HTTP max-age, a
// row's own expiry) sets the TTL of the value it returns with SetTTL.
func ExampleSetTTL() {
	ctx := context.Background()
	c, _ := readthrough.New[string, string](memstore.New(), &readthrough.Options[string, string]{TTL: time.Hour})
	r, _ := c.Fetch(ctx, "exchange-rate", func(ctx context.Context, _ string) (string, error) {
		// Say the upstream answered with Cache-Control: max-age=60.
		readthrough.SetTTL(ctx, 60*time.Second)
		return "1.0842", nil
	})
	fmt.Println(r.Value, time.Until(r.Expires).Round(time.Minute))
	// Output: 1.0842 1m0s
}

// NotFoundError gives every not-found one shape, so a caching decorator
// keeps its repository's contract (sql.ErrNoRows) whether the answer was
// loaded or cached.
func ExampleOptions_notFoundError() {
	ctx := context.Background()
	c, _ := readthrough.New[int, string](memstore.New(), &readthrough.Options[int, string]{
		NegativeTTL:   time.Minute,
		IsNotFound:    func(err error) bool { return errors.Is(err, sql.ErrNoRows) },
		NotFoundError: sql.ErrNoRows,
	})
	query := func(context.Context, int) (string, error) { return "", fmt.Errorf("select: %w", sql.ErrNoRows) }
	_, loaded := c.GetOrLoad(ctx, 7, query)
	_, cached := c.GetOrLoad(ctx, 7, query)
	fmt.Println(errors.Is(loaded, sql.ErrNoRows), errors.Is(cached, sql.ErrNoRows), errors.Is(cached, readthrough.ErrNotFound))
	// Output: true true true
}

// tally is a Recorder that counts events by kind and source.
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (t *tally) Record(e readthrough.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := e.Kind.String()
	if e.Kind == readthrough.EventHit {
		k += " " + e.Source.String()
	}
	if e.Kind == readthrough.EventLoad {
		k += " " + e.Outcome
	}
	t.n[k]++
}

// A Recorder receives every event, for metrics and traces: the
// otelreadthrough module is one for OpenTelemetry. Stats counts the same
// events whatever the Recorder.
func ExampleRecorder() {
	ctx := context.Background()
	rec := &tally{n: map[string]int{}}
	c, _ := readthrough.New[string, string](memstore.New(), &readthrough.Options[string, string]{
		Recorder: rec,
		Near:     readthrough.NearOptions{MaxEntries: 100},
	})
	load := func(context.Context, string) (string, error) { return "v", nil }
	for range 4 {
		_, _ = c.GetOrLoad(ctx, "k", load)
	}
	var lines []string
	for k, n := range rec.n {
		if !strings.HasPrefix(k, "store") { // store events depend on the store
			lines = append(lines, fmt.Sprintf("%s: %d", k, n))
		}
	}
	slices.Sort(lines)
	fmt.Println(strings.Join(lines, "\n"))
	st := c.Stats()
	fmt.Println("stats:", st.Misses, "miss,", st.Hits, "hits,", st.NearHits, "near")
	// Output:
	// hit near: 3
	// load ok: 1
	// miss: 1
	// stats: 1 miss, 3 hits, 3 near
}
