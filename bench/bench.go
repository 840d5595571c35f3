// Package bench measures readthrough against its floor and its peers. It is
// its own module, so the peers never enter the library's dependencies.
//
// go run ./bench/cmd/rtbench runs every scenario and prints the report
// (BENCHMARKS.md); go test -bench . ./bench gives benchstat-ready numbers
// for what runs in memory: the hit path against its floor and peers
// (MemHitCases), the near hit against otter (NearHitCases), the Recorder's
// cost (RecorderCases) and batches on memstore (BatchCases). Package
// mixed is the mixed workload across real processes.
package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	rediscache "github.com/go-redis/cache/v9"
	"github.com/maypok86/otter/v2"
	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/viccon/sturdyc"
)

// Product is the value every scenario caches: a small JSON document.
type Product struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Price int    `json:"price_cents"`
	Tags  []string
}

// Sample is the cached value.
var Sample = Product{ID: 42, Name: "widget", Price: 999, Tags: []string{"blue", "small"}}

var errMiss = errors.New("bench: unexpected miss")

func missLoader(context.Context, int) (Product, error) { return Product{}, errMiss }

// Case is one contender: an operation that must be a cache hit.
type Case struct {
	ID   string // short, for benchmark names
	Name string
	Note string
	Op   func() error
}

// MemHitCases returns the in-memory hit contenders, each warmed up: the
// floor (memstore Get and JSON decode, no readthrough), readthrough on
// memstore, readthrough on a store that is not NonBlocking (so every call
// pays a StoreTimeout context: the hit path before it was profiled), and
// the peers, which keep typed values in process.
func MemHitCases() ([]Case, error) {
	ctx := context.Background()
	var cases []Case

	floorStore := memstore.New()
	raw, _ := json.Marshal(Sample)
	if err := floorStore.Set(ctx, "product:42", raw, time.Hour); err != nil {
		return nil, err
	}
	cases = append(cases, Case{"floor", "floor: memstore Get + json.Unmarshal", "the same bytes, no readthrough", func() error {
		b, ok, err := floorStore.Get(ctx, "product:42")
		if err != nil || !ok {
			return errMiss
		}
		var p Product
		return json.Unmarshal(b, &p)
	}})

	// The floor plus what any shared cache must do on a hit: build the key
	// string, read the clock, check an expiry header. The same bytes as
	// readthrough stores (a 24-byte header, then JSON).
	headed := memstore.New()
	entry := make([]byte, 24, 24+len(raw))
	binary.BigEndian.PutUint64(entry[16:], uint64(time.Now().Add(time.Hour).UnixNano()))
	if err := headed.Set(ctx, "product:42", append(entry, raw...), time.Hour); err != nil {
		return nil, err
	}
	id := 42
	cases = append(cases, Case{"floor-cache", "floor + key, clock, expiry header", "what any shared cache adds to the floor", func() error {
		b, ok, err := headed.Get(ctx, "product:"+strconv.Itoa(id))
		if err != nil || !ok || len(b) < 24 {
			return errMiss
		}
		if time.Now().UnixNano() >= int64(binary.BigEndian.Uint64(b[16:])) {
			return errMiss
		}
		var p Product
		return json.Unmarshal(b[24:], &p)
	}})

	rt, err := readthrough.New[int, Product](memstore.New(), &readthrough.Options[int, Product]{Namespace: "product", TTL: time.Hour})
	if err != nil {
		return nil, err
	}
	cases = append(cases, hitCase("readthrough", "readthrough GetOrLoad on memstore", "entry header, key, stats, JSON decode", rt))

	nc, err := readthrough.New[int, Product](memstore.New(), &readthrough.Options[int, Product]{Namespace: "product", TTL: time.Hour,
		Near: readthrough.NearOptions{MaxEntries: 10_000}})
	if err != nil {
		return nil, err
	}
	if err := WarmNear(nc, 42); err != nil {
		return nil, err
	}
	cases = append(cases, hitCase("readthrough-near", "readthrough GetOrLoad, near hit (Options.Near)", "decoded copy in process: no store call, no decode", nc))

	wrapped := storetest.NewFaultyStore(memstore.New()) // not NonBlocking: a timeout context per call
	rtTimeout, err := readthrough.New[int, Product](wrapped, &readthrough.Options[int, Product]{Namespace: "product", TTL: time.Hour})
	if err != nil {
		return nil, err
	}
	cases = append(cases, hitCase("readthrough-blocking", "readthrough on a blocking store", "a wrapper that is not NonBlocking: a deadline and a goroutine per store call", rtTimeout))

	sc := sturdyc.New[Product](10_000, 8, time.Hour, 10)
	if _, err := sturdyc.GetOrFetch(ctx, sc, "product:42", func(context.Context) (Product, error) { return Sample, nil }); err != nil {
		return nil, err
	}
	cases = append(cases, Case{"sturdyc", "sturdyc GetOrFetch", "typed value in process, no decode", func() error {
		_, err := sturdyc.GetOrFetch(ctx, sc, "product:42", func(context.Context) (Product, error) { return Product{}, errMiss })
		return err
	}})

	oc := otter.Must(&otter.Options[int, Product]{MaximumSize: 10_000, ExpiryCalculator: otter.ExpiryWriting[int, Product](time.Hour)})
	loader := otter.LoaderFunc[int, Product](func(context.Context, int) (Product, error) { return Sample, nil })
	if _, err := oc.Get(ctx, 42, loader); err != nil {
		return nil, err
	}
	missing := otter.LoaderFunc[int, Product](missLoader)
	cases = append(cases, Case{"otter", "otter v2 Get with loader", "typed value in process, no decode", func() error {
		_, err := oc.Get(ctx, 42, missing)
		return err
	}})

	gc := rediscache.New(&rediscache.Options{LocalCache: rediscache.NewTinyLFU(10_000, time.Hour)})
	var warm Product
	if err := gc.Once(&rediscache.Item{Ctx: ctx, Key: "product:42", Value: &warm, TTL: time.Hour,
		Do: func(*rediscache.Item) (any, error) { return Sample, nil }}); err != nil {
		return nil, err
	}
	cases = append(cases, Case{"go-redis-cache", "go-redis/cache Once, local TinyLFU", "bytes in process, msgpack decode", func() error {
		var p Product
		return gc.Once(&rediscache.Item{Ctx: ctx, Key: "product:42", Value: &p, TTL: time.Hour,
			Do: func(*rediscache.Item) (any, error) { return nil, errMiss }})
	}})
	return cases, nil
}

func hitCase(id, name, note string, c *readthrough.Cache[int, Product]) Case {
	ctx := context.Background()
	if _, err := c.GetOrLoad(ctx, 42, func(context.Context, int) (Product, error) { return Sample, nil }); err != nil {
		panic(err)
	}
	return Case{id, name, note, func() error {
		_, err := c.GetOrLoad(ctx, 42, missLoader)
		return err
	}}
}
