package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/viccon/sturdyc"
)

// The batch scenario: BatchSize keys a call, BatchCached of them cached,
// the rest never seen before (new keys every call), so each call loads
// BatchSize-BatchCached keys.
const (
	BatchSize   = 100
	BatchCached = 90
)

// BatchBackend is where the batch contenders keep their entries.
type BatchBackend struct {
	Name string
	// NewStore returns a store for one contender, and a function that
	// counts its round trips so far (for a shared client, a running total:
	// the scenario takes differences).
	NewStore func() (readthrough.Store, func() int)
	// Sturdy, when not nil, returns sturdyc's distributed storage and its
	// round-trip count; nil runs sturdyc in process alone.
	Sturdy func() (sturdyc.DistributedStorage, func() int)
}

// BatchCase is one contender of the batch scenario. Op makes one call of
// BatchSize keys; RoundTrips and Loads count, so far, the store round
// trips and the loader calls (single or batch) its calls made.
type BatchCase struct {
	ID, Name   string
	Op         func() error
	RoundTrips func() int
	Loads      func() int
}

// BatchCases returns the batch contenders on backend, each warmed with its
// BatchCached keys: GetOrLoadMany without and with the near cache,
// BatchSize GetOrLoad calls one after another, and sturdyc's
// GetOrFetchBatch. The loaders return at once, so times are the caches'
// own; add the upstream's latency once per loader call.
func BatchCases(backend BatchBackend) ([]BatchCase, error) {
	ctx := context.Background()
	hot := make([]int, BatchCached)
	for i := range hot {
		hot[i] = i
	}
	// keys returns the next call's keys: the cached ones, then new ones.
	keys := func(next *atomic.Int64) []int {
		ks := make([]int, 0, BatchSize)
		ks = append(ks, hot...)
		base := 1_000_000 + int(next.Add(1))*BatchSize
		for i := range BatchSize - BatchCached {
			ks = append(ks, base+i)
		}
		return ks
	}
	value := func(k int) Product { return Product{ID: k, Name: "widget", Price: 999, Tags: Sample.Tags} }

	var cases []BatchCase
	newCache := func(near bool) (*readthrough.Cache[int, Product], func() int, error) {
		st, trips := backend.NewStore()
		opts := &readthrough.Options[int, Product]{Namespace: fmt.Sprintf("batch%d", len(cases)), TTL: time.Hour}
		if near {
			opts.Near = readthrough.NearOptions{MaxEntries: 10_000}
		}
		c, err := readthrough.New(st, opts)
		return c, trips, err
	}
	warmMany := func(c *readthrough.Cache[int, Product]) error {
		for range 2 { // load, then (near) read back so the copies are made
			if _, err := c.GetOrLoadMany(ctx, hot, func(_ context.Context, ks []int) (map[int]Product, error) {
				m := make(map[int]Product, len(ks))
				for _, k := range ks {
					m[k] = value(k)
				}
				return m, nil
			}); err != nil {
				return err
			}
		}
		return nil
	}

	for _, near := range []bool{false, true} {
		c, trips, err := newCache(near)
		if err != nil {
			return nil, err
		}
		if err := warmMany(c); err != nil {
			return nil, err
		}
		var next atomic.Int64
		var loads atomic.Int64
		load := func(_ context.Context, ks []int) (map[int]Product, error) {
			loads.Add(1)
			m := make(map[int]Product, len(ks))
			for _, k := range ks {
				m[k] = value(k)
			}
			return m, nil
		}
		id, name := "many", "readthrough GetOrLoadMany"
		if near {
			id, name = "many-near", "readthrough GetOrLoadMany, near cache on"
		}
		cases = append(cases, BatchCase{id, name, func() error {
			ks := keys(&next)
			m, err := c.GetOrLoadMany(ctx, ks, load)
			if err == nil && len(m) != len(ks) {
				err = fmt.Errorf("bench: %d values for %d keys", len(m), len(ks))
			}
			return err
		}, trips, func() int { return int(loads.Load()) }})
	}

	{
		c, trips, err := newCache(false)
		if err != nil {
			return nil, err
		}
		if err := warmMany(c); err != nil {
			return nil, err
		}
		var next atomic.Int64
		var loads atomic.Int64
		load := func(_ context.Context, k int) (Product, error) {
			loads.Add(1)
			return value(k), nil
		}
		cases = append(cases, BatchCase{"single", fmt.Sprintf("%d GetOrLoad calls, one after another", BatchSize), func() error {
			for _, k := range keys(&next) {
				if _, err := c.GetOrLoad(ctx, k, load); err != nil {
					return err
				}
			}
			return nil
		}, trips, func() int { return int(loads.Load()) }})
	}

	{
		var opts []sturdyc.Option
		trips := func() int { return 0 }
		note := "sturdyc GetOrFetchBatch (in process)"
		if backend.Sturdy != nil {
			var st sturdyc.DistributedStorage
			st, trips = backend.Sturdy()
			opts = append(opts, sturdyc.WithDistributedStorage(st))
			note = "sturdyc GetOrFetchBatch, distributed storage"
		}
		sc := sturdyc.New[Product](1_000_000, 8, time.Hour, 10, opts...)
		keyFn := sc.BatchKeyFn(fmt.Sprintf("batch%d", len(cases)))
		var loads atomic.Int64
		fetch := func(_ context.Context, ids []string) (map[string]Product, error) {
			loads.Add(1)
			m := make(map[string]Product, len(ids))
			for _, id := range ids {
				k, _ := strconv.Atoi(id)
				m[id] = value(k)
			}
			return m, nil
		}
		strs := func(ks []int) []string {
			ids := make([]string, len(ks))
			for i, k := range ks {
				ids[i] = strconv.Itoa(k)
			}
			return ids
		}
		if _, err := sturdyc.GetOrFetchBatch(ctx, sc, strs(hot), keyFn, fetch); err != nil {
			return nil, err
		}
		loads.Store(0)
		var next atomic.Int64
		cases = append(cases, BatchCase{"sturdyc", note, func() error {
			ids := strs(keys(&next))
			m, err := sturdyc.GetOrFetchBatch(ctx, sc, ids, keyFn, fetch)
			if err == nil && len(m) != len(ids) {
				err = fmt.Errorf("bench: %d values for %d keys", len(m), len(ids))
			}
			return err
		}, trips, func() int { return int(loads.Load()) }})
	}
	return cases, nil
}

// MemstoreBackend is the batch scenario on memstore, each contender on its
// own CountedMemstore; sturdyc runs in process alone.
func MemstoreBackend() BatchBackend {
	return BatchBackend{Name: "memstore", NewStore: func() (readthrough.Store, func() int) {
		s := NewCountedMemstore()
		return s, func() int {
			calls, _ := s.Calls()
			n := 0
			for _, c := range calls {
				n += c
			}
			return n
		}
	}}
}
