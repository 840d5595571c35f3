package redisstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
)

type product struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Price int    `json:"price_cents"`
}

// BenchmarkHitVsRaw measures a GetOrLoad hit against the floor a caller
// would write by hand: a go-redis GET of the same entry and a JSON decode,
// in the same run, with 1 and 64 goroutines. It reports both costs and
// their ratio (x-raw); 1.00 means readthrough adds nothing.
func BenchmarkHitVsRaw(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
	defer rdb.Close()
	ctx := context.Background()
	cache, err := readthrough.New[int, product](redisstore.New(rdb), &readthrough.Options[int, product]{Namespace: "product", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	want := product{ID: 42, Name: "widget", Price: 999}
	if _, err := cache.GetOrLoad(ctx, 42, func(context.Context, int) (product, error) { return want, nil }); err != nil {
		b.Fatal(err)
	}
	// The raw side reads an entry holding the same JSON.
	raw, _ := json.Marshal(want)
	rdb.Set(ctx, "raw:42", raw, time.Hour)

	miss := func(context.Context, int) (product, error) { return product{}, fmt.Errorf("unexpected miss") }
	ops := map[string]func() error{
		"readthrough": func() error {
			p, err := cache.GetOrLoad(ctx, 42, miss)
			if err == nil && p != want {
				err = fmt.Errorf("got %+v", p)
			}
			return err
		},
		"raw": func() error {
			b, err := rdb.Get(ctx, "raw:42").Bytes()
			if err != nil {
				return err
			}
			var p product
			return json.Unmarshal(b, &p)
		},
	}
	for _, g := range []int{1, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			// Alternate rounds so drift on the machine hits both sides alike.
			var t [2]time.Duration
			for round := range 4 {
				for i, name := range []string{"raw", "readthrough"} {
					if round%2 == 1 {
						name = []string{"readthrough", "raw"}[i]
					}
					d, err := run(g, b.N, ops[name])
					if err != nil {
						b.Fatal(err)
					}
					if name == "raw" {
						t[0] += d
					} else {
						t[1] += d
					}
				}
			}
			n := float64(4 * b.N)
			b.ReportMetric(float64(t[0].Nanoseconds())/n, "raw-ns/op")
			b.ReportMetric(float64(t[1].Nanoseconds())/n, "rt-ns/op")
			b.ReportMetric(float64(t[1])/float64(t[0]), "x-raw")
		})
	}
}

// run does n calls of op spread over g goroutines and returns the time taken.
func run(g, n int, op func() error) (time.Duration, error) {
	var left atomic.Int64
	left.Store(int64(n))
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range g {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := op(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}
