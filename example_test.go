package readthrough_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/storetest"
)

type Product struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Price int    `json:"price_cents"`
}

// The quick start: a cache of products in front of a slow lookup, on the
// in-memory store.
func Example() {
	ctx := context.Background()
	products, err := readthrough.New[int, Product](memstore.New(), &readthrough.Options[int, Product]{
		Namespace: "product",
		TTL:       10 * time.Minute,
	})
	if err != nil {
		panic(err)
	}
	lookup := func(ctx context.Context, id int) (Product, error) {
		// A database query or an HTTP call in real life.
		return Product{ID: id, Name: "widget", Price: 999}, nil
	}

	for range 3 {
		p, err := products.GetOrLoad(ctx, 42, lookup)
		fmt.Println(p.Name, p.Price, err)
	}
	fmt.Println("store key:", products.Key(42))
	fmt.Println("loads:", products.Stats().Loads, "hits:", products.Stats().Hits)
	// Output:
	// widget 999 <nil>
	// widget 999 <nil>
	// widget 999 <nil>
	// store key: product:42
	// loads: 1 hits: 2
}

// A not-found is cached for NegativeTTL, so a missing ID reaches the
// upstream once, not on every request.
func Example_negativeCaching() {
	ctx := context.Background()
	c, _ := readthrough.New[int, Product](memstore.New(), &readthrough.Options[int, Product]{
		NegativeTTL: 30 * time.Second,
	})
	calls := 0
	lookup := func(ctx context.Context, id int) (Product, error) {
		calls++
		return Product{}, fmt.Errorf("product %d: %w", id, readthrough.ErrNotFound)
	}
	for range 3 {
		_, err := c.GetOrLoad(ctx, 404, lookup)
		fmt.Println(errors.Is(err, readthrough.ErrNotFound))
	}
	fmt.Println("upstream calls:", calls)
	// Output:
	// true
	// true
	// true
	// upstream calls: 1
}

// Fetch tells where a value came from: a header such as x-cache, or a metric.
func ExampleCache_Fetch() {
	ctx := context.Background()
	c, _ := readthrough.New[string, string](memstore.New(), nil)
	load := func(ctx context.Context, k string) (string, error) { return "hello " + k, nil }
	for range 2 {
		r, _ := c.Fetch(ctx, "world", load)
		fmt.Printf("%s (from %s)\n", r.Value, r.Source)
	}
	// Output:
	// hello world (from loader)
	// hello world (from cache)
}

// Keys that are not strings or integers need a KeyFunc. Put in it only what
// determines the response.
func ExampleOptions_keyFunc() {
	type Query struct {
		Country string
		Page    int
		TraceID string // does not change the answer: not in the key
	}
	c, _ := readthrough.New[Query, []string](memstore.New(), &readthrough.Options[Query, []string]{
		Namespace: "search",
		KeyFunc:   func(q Query) string { return fmt.Sprintf("%s/%d", q.Country, q.Page) },
	})
	fmt.Println(c.Key(Query{Country: "fr", Page: 2, TraceID: "abc"}))
	// Output: search:fr/2
}

// Several processes share a store; each is a Cache over it. However many
// callers miss at once, one process loads and the others wait on its lock
// and read its result.
func Example_distributedLock() {
	ctx := context.Background()
	shared := memstore.New() // Redis or Momento in production
	var mu sync.Mutex
	loads := 0
	load := func(ctx context.Context, k string) (string, error) {
		mu.Lock()
		loads++
		mu.Unlock()
		time.Sleep(50 * time.Millisecond) // a slow upstream
		return "report " + k, nil
	}
	var wg sync.WaitGroup
	for range 4 { // four "processes"
		c, _ := readthrough.New[string, string](shared, nil)
		for range 8 { // eight callers each
			wg.Go(func() { _, _ = c.GetOrLoad(ctx, "q3", load) })
		}
	}
	wg.Wait()
	fmt.Println("loads:", loads)
	// Output: loads: 1
}

// The store is never a dependency: when it fails, the loader serves every
// call and the failures are counted.
func Example_failOpen() {
	ctx := context.Background()
	store := storetest.NewFaultyStore(memstore.New())
	store.InjectAll(storetest.Fault{Err: errors.New("connection refused")})
	c, _ := readthrough.New[string, string](store, nil)

	v, err := c.GetOrLoad(ctx, "k", func(ctx context.Context, k string) (string, error) { return "fresh", nil })
	fmt.Println(v, err, "store errors:", c.Stats().StoreErrors)
	// Output: fresh <nil> store errors: 1
}

// []byte and string values are stored as they are; other types as JSON
// unless you set a Codec.
func ExampleBytesCodec() {
	ctx := context.Background()
	store := memstore.New()
	c, _ := readthrough.New[string, []byte](store, &readthrough.Options[string, []byte]{
		Codec: readthrough.BytesCodec(), // the default for []byte, shown here for clarity
	})
	img, _ := c.GetOrLoad(ctx, "logo.png", func(ctx context.Context, k string) ([]byte, error) {
		return []byte{0x89, 'P', 'N', 'G'}, nil
	})
	fmt.Printf("% x\n", img)
	// Output: 89 50 4e 47
}

// TTLJitter spreads the expiry of keys loaded together, so they do not all
// miss at the same moment.
func ExampleOptions_ttlJitter() {
	ctx := context.Background()
	c, _ := readthrough.New[int, int](memstore.New(), &readthrough.Options[int, int]{
		TTL:       time.Hour,
		TTLJitter: 5 * time.Minute,
	})
	r, _ := c.Fetch(ctx, 1, func(ctx context.Context, k int) (int, error) { return k, nil })
	ttl := time.Until(r.Expires)
	fmt.Println(ttl > 59*time.Minute && ttl < time.Hour+5*time.Minute)
	// Output: true
}

// --- wrapping a repository: the way most services use readthrough.

// ProductRepository is a service's own interface over its database.
type ProductRepository interface {
	Get(ctx context.Context, id int) (Product, error) // sql.ErrNoRows when there is no such row
}

// CachedProducts is a caching decorator: the same interface, reading
// through a cache.
type CachedProducts struct {
	repo  ProductRepository
	cache *readthrough.Cache[int, Product]
}

func NewCachedProducts(repo ProductRepository, store readthrough.Store) (*CachedProducts, error) {
	cache, err := readthrough.New[int, Product](store, &readthrough.Options[int, Product]{
		Namespace:   "product",
		TTL:         10 * time.Minute,
		NegativeTTL: time.Minute,
		// The repository speaks database/sql; map its "no row" to not-found.
		IsNotFound: func(err error) bool { return errors.Is(err, sql.ErrNoRows) },
	})
	if err != nil {
		return nil, err
	}
	return &CachedProducts{repo: repo, cache: cache}, nil
}

func (c *CachedProducts) Get(ctx context.Context, id int) (Product, error) {
	p, err := c.cache.GetOrLoad(ctx, id, c.repo.Get)
	if errors.Is(err, readthrough.ErrNotFound) {
		// A cached not-found carries no sql.ErrNoRows: keep the interface's contract.
		return Product{}, sql.ErrNoRows
	}
	return p, err
}

// fakeRepo stands for the database.
type fakeRepo struct {
	mu    sync.Mutex
	rows  map[int]Product
	calls int
}

func (r *fakeRepo) Get(ctx context.Context, id int) (Product, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	p, ok := r.rows[id]
	if !ok {
		return Product{}, sql.ErrNoRows
	}
	return p, nil
}

// A caching decorator over a repository; callers still see sql.ErrNoRows.
func Example_repository() {
	ctx := context.Background()
	db := &fakeRepo{rows: map[int]Product{1: {ID: 1, Name: "widget"}}}
	var products ProductRepository // the rest of the service sees only this
	products, _ = NewCachedProducts(db, memstore.New())

	for range 2 {
		p, _ := products.Get(ctx, 1)
		_, err := products.Get(ctx, 2)
		fmt.Println(p.Name, errors.Is(err, sql.ErrNoRows))
	}
	fmt.Println("database queries:", db.calls)
	// Output:
	// widget true
	// widget true
	// database queries: 2
}

// The decorator's unit test, as users write theirs: memstore stands in for
// Redis or Momento, and the fake repository counts the queries.
func TestCachedProductsServesRepeatsFromCache(t *testing.T) {
	t.Parallel()
	db := &fakeRepo{rows: map[int]Product{1: {ID: 1, Name: "widget"}}}
	products, err := NewCachedProducts(db, memstore.New())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		p, err := products.Get(t.Context(), 1)
		if err != nil || p.Name != "widget" {
			t.Fatalf("Get(1) = %+v, %v", p, err)
		}
		if _, err := products.Get(t.Context(), 2); !errors.Is(err, sql.ErrNoRows) {
			t.Fatalf("Get(2) err = %v, want sql.ErrNoRows", err)
		}
	}
	if db.calls != 2 {
		t.Fatalf("%d database queries for 10 reads of 2 ids, want 2", db.calls)
	}
}

// Set writes through after an update; Delete makes the next read load.
func ExampleCache_Set() {
	ctx := context.Background()
	c, _ := readthrough.New[int, Product](memstore.New(), nil)
	_ = c.Set(ctx, 1, Product{ID: 1, Name: "renamed widget"}) // after UPDATE products ...
	p, _ := c.GetOrLoad(ctx, 1, func(ctx context.Context, id int) (Product, error) {
		return Product{}, errors.New("not called: the value is cached")
	})
	fmt.Println(p.Name)

	_ = c.Delete(ctx, 1) // after DELETE FROM products ...
	_, err := c.GetOrLoad(ctx, 1, func(ctx context.Context, id int) (Product, error) {
		return Product{}, readthrough.ErrNotFound
	})
	fmt.Println(err)
	// Output:
	// renamed widget
	// readthrough: not found
}

// A caller whose context ends returns at once; the load it started goes on
// for the others and is still cached.
func Example_cancellation() {
	c, _ := readthrough.New[string, string](memstore.New(), nil)
	started := make(chan struct{})
	finish := make(chan struct{})
	slow := func(ctx context.Context, k string) (string, error) {
		close(started)
		<-finish // the upstream takes its time
		return "ready", nil
	}

	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error)
	go func() {
		_, err := c.GetOrLoad(ctx, "report", slow)
		left <- err
	}()
	<-started
	cancel()
	fmt.Println("impatient caller:", <-left)

	close(finish)
	v, err := c.GetOrLoad(context.Background(), "report", slow) // joins or hits; never loads again
	fmt.Println("next caller:", v, err, "loads:", c.Stats().Loads)
	// Output:
	// impatient caller: context canceled
	// next caller: ready <nil> loads: 1
}
