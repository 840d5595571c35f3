package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/redis/go-redis/v9"
)

// --- 5. waiting cost

// landing is redisstore, every capability kept, noting when a
// compare-and-swap that writes something new (a load's write-back, not a
// lease kept alive) returns.
type landing struct {
	*redisstore.Store
	at atomic.Int64
}

func (l *landing) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	ok, err := l.Store.CompareAndSwap(ctx, key, old, value, ttl)
	if !bytes.Equal(old, value) {
		l.at.Store(time.Now().UnixNano())
	}
	return ok, err
}

func waitingCost(addr string) {
	const (
		latency    = 100 * time.Millisecond
		iterations = 40
		waiters    = 4
	)
	fmt.Println("## 5. Waiting cost (`-only 5`)")
	fmt.Println()
	fmt.Printf("One process holds a key's lease and loads for %v; %d others (each its own Cache, client and link) call the key\n", latency, waiters)
	fmt.Printf("meanwhile and wait. The cost is the time from the holder's write-back (its compare-and-swap) returning to each\n")
	fmt.Printf("waiter returning, over %d keys (%d samples); store round trips are each waiter's per key, counted on its client\n", iterations, iterations*waiters)
	fmt.Println("(the link's own commands left out). Notified waiters are redisstore's default: Redis's tracking tells them the")
	fmt.Println("key changed. Polling waiters have the same store behind `storetest.Plain`, which hides every capability, as")
	fmt.Println("a store that cannot notify would. Targets, notified: p99 at most 1 ms, at most 2 store calls per waiter.")
	fmt.Println()
	fmt.Println("| waiters | p50 | p99 | max | store round trips per waiter: median, max | waiters above 2 |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: |")
	var targets string
	for _, s := range []struct {
		name  string
		plain bool
	}{
		{"notified (redisstore, the default)", false},
		{fmt.Sprintf("polling (a store that cannot notify): every %v, backing off to %v",
			readthrough.DefaultPollInterval, readthrough.DefaultMaxPollInterval), true},
	} {
		costs, calls := measureWaiting(addr, s.plain, latency, iterations, waiters)
		slices.Sort(costs)
		slices.Sort(calls)
		q := func(p float64) time.Duration { return costs[int(p*float64(len(costs)-1))] }
		above := 0
		for _, n := range calls {
			if n > 2 {
				above++
			}
		}
		fmt.Printf("| %s | %s | %s | %s | %d, %d | %d of %d |\n", s.name, ms(q(0.5)), ms(q(0.99)), ms(q(1)),
			calls[len(calls)/2], calls[len(calls)-1], above, len(calls))
		if !s.plain {
			targets = fmt.Sprintf("Targets, notified: p99 ≤ 1 ms: %s, %s; ≤ 2 store calls per waiter: %d at most, %s.",
				ms(q(0.99)), met(q(0.99) <= time.Millisecond), calls[len(calls)-1], met(calls[len(calls)-1] <= 2))
		}
	}
	fmt.Println()
	fmt.Println(targets)
	fmt.Println("A negative time is a waiter that returned before the holder's own write-back call did: Redis's invalidation")
	fmt.Println("reached the waiter before the reply reached the holder. A notified waiter reads the key (`SET NX GET`: the")
	fmt.Println("lease is there), waits to be told it changed, and reads it again: the value. A third read is a waiter woken")
	fmt.Println("by the invalidation of the lease's own write, which reached it on the link's connection after its read saw")
	fmt.Println("the lease: it reads the lease again and goes back to waiting.")
	fmt.Println()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func measureWaiting(addr string, plain bool, latency time.Duration, iterations, waiters int) (costs []time.Duration, calls []int) {
	ctx := context.Background()
	newCache := func(s readthrough.Store) *readthrough.Cache[string, string] {
		c, err := readthrough.New[string, string](s, &readthrough.Options[string, string]{Namespace: "wait"})
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	holderClient := redis.NewClient(&redis.Options{Addr: addr})
	defer holderClient.Close()
	land := &landing{Store: redisstore.New(holderClient)}
	holder := newCache(land)
	defer holder.Close()
	counters := make([]*redistest.Counter, waiters)
	caches := make([]*readthrough.Cache[string, string], waiters)
	for i := range caches {
		cl := redis.NewClient(&redis.Options{Addr: addr})
		defer cl.Close()
		counters[i] = redistest.CountCommands(cl)
		var st readthrough.Store = redisstore.New(cl)
		if plain {
			st = storetest.Plain(st)
		}
		caches[i] = newCache(st)
		defer caches[i].Close()
	}
	for it := range iterations + 1 { // the first is a warm-up: the links connect
		key := fmt.Sprintf("k%d-%d", time.Now().UnixNano(), it)
		started := make(chan struct{})
		done := make(chan struct{})
		land.at.Store(0)
		go func() {
			defer close(done)
			_, _ = holder.GetOrLoad(ctx, key, func(context.Context, string) (string, error) {
				close(started)
				time.Sleep(latency)
				return "v", nil
			})
		}()
		<-started
		returned := make([]int64, waiters)
		var wg sync.WaitGroup
		for i, c := range caches {
			counters[i].Reset()
			wg.Go(func() {
				_, _ = c.GetOrLoad(ctx, key, func(context.Context, string) (string, error) { return "v", nil })
				returned[i] = time.Now().UnixNano()
			})
		}
		wg.Wait()
		<-done
		// The holder writes back after answering: wait for it.
		for land.at.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		if it == 0 {
			continue
		}
		landed := land.at.Load()
		for i := range caches {
			costs = append(costs, time.Duration(returned[i]-landed))
			trips, _ := dataPath(counters[i].Snapshot())
			calls = append(calls, trips)
		}
	}
	return costs, calls
}
