// Command productlookup is a product lookup service that reads through a
// cache to a slow upstream catalog.
//
// With no flags it starts the catalog (on loopback, with latency and some
// IDs that do not exist) and the service, fires bursts of concurrent
// requests at a cold ID, a repeated ID and a missing ID, and prints what
// each burst cost the upstream:
//
//	go run ./examples/productlookup
//
// With -redis it runs the same service against Redis or Valkey:
//
//	go run ./examples/productlookup -redis 127.0.0.1:6379
//
// With -outage the catalog goes down mid-run and the service keeps
// answering from stale entries (fail-safe):
//
//	go run ./examples/productlookup -outage
//
// With -listen it keeps serving instead: curl -i localhost:8080/products/7
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/redis/go-redis/v9"
)

// Product is what the catalog serves.
type Product struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Price int    `json:"price_cents"`
}

func main() {
	var (
		concurrency = flag.Int("c", 50, "concurrent requests per burst")
		latency     = flag.Duration("latency", 80*time.Millisecond, "upstream catalog latency")
		listen      = flag.String("listen", "", "serve on this address instead of running the demo")
		redisAddr   = flag.String("redis", "", "use the Redis or Valkey server at this address instead of the in-memory store")
		outage      = flag.Bool("outage", false, "take the upstream down mid-run and keep answering from stale entries (fail-safe)")
	)
	flag.Parse()

	catalog := newCatalog(*latency)
	catalogURL, stopCatalog, err := serve("127.0.0.1:0", catalog)
	if err != nil {
		log.Fatal(err)
	}
	defer stopCatalog()

	store, storeName, err := openStore(*redisAddr)
	if err != nil {
		log.Fatal(err)
	}
	svc, err := newService(store, catalogURL, *outage)
	if err != nil {
		log.Fatal(err)
	}
	if *listen != "" {
		log.Printf("serving on %s (catalog at %s, store %s)", *listen, catalogURL, storeName)
		log.Fatal(http.ListenAndServe(*listen, svc))
	}
	svcURL, stopSvc, err := serve("127.0.0.1:0", svc)
	if err != nil {
		log.Fatal(err)
	}
	defer stopSvc()

	fmt.Printf("product lookup: %d concurrent requests per burst, upstream latency %v, store %s\n", *concurrency, *latency, storeName)
	type step struct {
		name string
		id   int
		do   func() // before the burst
	}
	steps := []step{
		{name: "cold id 7", id: 7},
		{name: "repeat id 7", id: 7},
		{name: "missing id 4040", id: 4040},
		{name: "missing id 4040 again", id: 4040},
	}
	if *outage {
		fmt.Printf("outage mode: TTL %v, fail-safe for %v after it, upstream retried every %v\n", outageTTL, outageMaxStale, outageThrottle)
		steps = []step{
			{name: "cold id 7", id: 7},
			{name: "upstream down, id 7 expired", id: 7, do: func() { time.Sleep(outageTTL + 100*time.Millisecond); catalog.down.Store(true) }},
			{name: "upstream down, id 7 again", id: 7},
			{name: "upstream down, cold id 8", id: 8},
			{name: "upstream back, after the throttle", id: 7, do: func() { catalog.down.Store(false); time.Sleep(outageThrottle) }},
		}
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "burst\trequests\tstatus\tupstream calls\thits\tstale\tmisses\tp50\tmax\t")
	for _, st := range steps {
		if st.do != nil {
			st.do()
		}
		before := catalog.calls.Load()
		r := burst(svcURL, st.id, *concurrency)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%v\t%v\t\n", st.name, *concurrency, r.statuses(),
			catalog.calls.Load()-before, r.hits, r.stale, r.misses, r.p50().Round(100*time.Microsecond), r.max().Round(100*time.Microsecond))
	}
	tw.Flush()
	st := svc.cache.Stats()
	fmt.Printf("\ncache stats: loads %d, hits %d, negative hits %d, shared %d, fail-safe %d, store errors %d\n",
		st.Loads, st.Hits, st.NegativeHits, st.Shared, st.FailSafeHits, st.StoreErrors)
}

// The outage demo's settings: short enough to watch.
const (
	outageTTL      = time.Second
	outageMaxStale = 10 * time.Minute
	outageThrottle = 2 * time.Second
)

// openStore returns the cache's store: Redis when an address is given,
// else in memory.
func openStore(redisAddr string) (readthrough.Store, string, error) {
	if redisAddr == "" {
		return memstore.New(memstore.WithMaxEntries(100_000)), "memstore", nil
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, "", fmt.Errorf("redis at %s: %w", redisAddr, err)
	}
	// A fresh demo: forget what an earlier run cached for the demo's IDs.
	rdb.Del(ctx, "product:7", "product:4040")
	return redisstore.New(rdb), "redis " + redisAddr, nil
}

// --- the upstream catalog

type catalog struct {
	*http.ServeMux
	latency time.Duration
	calls   atomic.Int64
	down    atomic.Bool // answer 503 to everything
}

func newCatalog(latency time.Duration) *catalog {
	c := &catalog{ServeMux: http.NewServeMux(), latency: latency}
	c.HandleFunc("GET /products/{id}", c.product)
	return c
}

// product answers /products/{id}: IDs 1 to 999 exist, others are 404.
func (c *catalog) product(w http.ResponseWriter, r *http.Request) {
	c.calls.Add(1)
	time.Sleep(c.latency)
	if c.down.Load() {
		http.Error(w, "catalog unavailable", http.StatusServiceUnavailable)
		return
	}
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || id < 1 || id > 999 {
		http.Error(w, "no such product", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Product{ID: id, Name: fmt.Sprintf("product %d", id), Price: 100 * id})
}

// --- the service

type service struct {
	cache      *readthrough.Cache[int, Product]
	catalogURL string
	client     *http.Client
	mux        *http.ServeMux
}

func newService(store readthrough.Store, catalogURL string, failSafe bool) (*service, error) {
	opts := &readthrough.Options[int, Product]{
		Namespace:   "product",
		TTL:         5 * time.Minute,
		NegativeTTL: 30 * time.Second, // a 404 is cached briefly
		// Repeat hits from process memory; any write to a product, by
		// any process, evicts its copy.
		Near: readthrough.NearOptions{MaxEntries: 10_000},
	}
	if failSafe {
		// When the catalog fails, serve the last good answer for up to
		// MaxStale, retrying the catalog once per Throttle.
		opts.TTL = outageTTL
		opts.FailSafe = readthrough.FailSafeOptions{MaxStale: outageMaxStale, Throttle: outageThrottle}
	}
	cache, err := readthrough.New[int, Product](store, opts)
	if err != nil {
		return nil, err
	}
	s := &service{cache: cache, catalogURL: catalogURL, client: &http.Client{Timeout: 10 * time.Second}, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /products/{id}", s.getProduct)
	return s, nil
}

func (s *service) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *service) getProduct(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		http.Error(w, "bad id", http.StatusBadRequest)
		return
	}
	res, err := s.cache.Fetch(r.Context(), id, s.fetchUpstream)
	switch res.Source {
	case readthrough.SourceCache, readthrough.SourceNear:
		w.Header().Set("x-cache", "hit")
	case readthrough.SourceStale:
		w.Header().Set("x-cache", "stale")
	default:
		w.Header().Set("x-cache", "miss")
	}
	switch {
	case errors.Is(err, readthrough.ErrNotFound):
		http.Error(w, "no such product", http.StatusNotFound) // the upstream's 404, relayed
	case err != nil:
		http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res.Value)
	}
}

// fetchUpstream is the loader: one GET to the catalog.
func (s *service) fetchUpstream(ctx context.Context, id int) (Product, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/products/%d", s.catalogURL, id), nil)
	if err != nil {
		return Product{}, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Product{}, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		var p Product
		err := json.NewDecoder(resp.Body).Decode(&p)
		return p, err
	case http.StatusNotFound:
		return Product{}, fmt.Errorf("catalog: product %d: %w", id, readthrough.ErrNotFound)
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return Product{}, fmt.Errorf("catalog: %s: %s", resp.Status, body)
	}
}

// --- the load generator

type burstResult struct {
	codes               map[int]int
	hits, stale, misses int
	latencies           []time.Duration
}

func burst(baseURL string, id, n int) *burstResult {
	res := &burstResult{codes: map[int]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for range n {
		wg.Go(func() {
			start := time.Now()
			resp, err := client.Get(fmt.Sprintf("%s/products/%d", baseURL, id))
			elapsed := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			res.latencies = append(res.latencies, elapsed)
			if err != nil {
				res.codes[0]++
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			res.codes[resp.StatusCode]++
			switch resp.Header.Get("x-cache") {
			case "hit":
				res.hits++
			case "stale":
				res.stale++
			default:
				res.misses++
			}
		})
	}
	wg.Wait()
	slices.Sort(res.latencies)
	return res
}

func (r *burstResult) statuses() string {
	codes := make([]int, 0, len(r.codes))
	for c := range r.codes {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	s := ""
	for i, c := range codes {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%d×%d", c, r.codes[c])
	}
	return s
}

func (r *burstResult) p50() time.Duration { return r.latencies[len(r.latencies)/2] }
func (r *burstResult) max() time.Duration { return r.latencies[len(r.latencies)-1] }

// serve starts h on addr and returns its base URL and a stop function.
func serve(addr string, h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}
