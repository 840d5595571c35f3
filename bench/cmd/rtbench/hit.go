package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/bench"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/redis/go-redis/v9"
)

// --- 1. hit in memory

func memHit() {
	cases, err := bench.MemHitCases()
	if err != nil {
		log.Fatal(err)
	}
	ns, allocs := benchRounds(cases)
	fmt.Println("## 1. A hit, in memory (`-only 1`)")
	fmt.Println()
	fmt.Println("`GetOrLoad` hit on memstore against its floor (memstore `Get` and `json.Unmarshal` of the same bytes, no")
	fmt.Println("readthrough in between), the near-cache hit, and the peers, which keep typed values in process and decode")
	fmt.Println("nothing: they cannot be shared across processes, which is what readthrough's bytes are for.")
	fmt.Println()
	fmt.Println("| contender | ns/op | allocs/op | × floor | × floor + key, clock, header | note |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | --- |")
	for i, c := range cases {
		fmt.Printf("| %s | %.0f | %d | %.2f | %.2f | %s |\n", c.Name, median(ns[i]), allocs[i],
			median(ratios(ns[i], ns[0])), median(ratios(ns[i], ns[1])), c.Note)
	}
	fmt.Println()
	fmt.Println("The second row is the least any shared cache does beyond the floor: build the key, read the clock, check")
	fmt.Println("an expiry header on the same bytes. A store hit adds to it the entry header's decode and checks (CRC, type,")
	fmt.Println("lease), the stats and the Result. The \"blocking store\" row is memstore behind a wrapper that is not")
	fmt.Println("`NonBlocking` (storetest.FaultyStore): a deadline context, and a goroutine per store call, since the cache")
	fmt.Println("cannot trust the wrapper to honour ctx. A remote store that is `Bounded` (redisstore, momentostore) pays")
	fmt.Println("the context but not the goroutine.")
	fmt.Println()
	nearMicro()
}

func nearMicro() {
	cases, err := bench.NearHitCases()
	if err != nil {
		log.Fatal(err)
	}
	ns, allocs := benchRounds(cases)
	fmt.Println("### The near hit against otter")
	fmt.Println()
	fmt.Println("A hot key (an int) answered by the near cache (`Options.Near`, memstore behind it), against otter v2's")
	fmt.Println("`GetIfPresent` of the same decoded value: keyed as a cache in front of a shared store keys it, namespace + \":\"")
	fmt.Println("+ `strconv.Itoa(id)` built per call, or by a prebuilt string; and otter with per-entry expiry")
	fmt.Println("(`ExpiryCalculator`), since a near copy must never be served past its freshness and so needs a clock read,")
	fmt.Println("which is the last row on its own. Targets: at most 1.5× otter with the derived key, at most 2× with a")
	fmt.Println("prebuilt key, 0 to 1 allocations.")
	fmt.Println()
	fmt.Println("| contender | ns/op | allocs/op | readthrough ÷ this | note |")
	fmt.Println("| --- | ---: | ---: | ---: | --- |")
	x := make([]float64, len(cases))
	for i, c := range cases {
		x[i] = median(ratios(ns[0], ns[i]))
		fmt.Printf("| %s | %.1f | %d | %.2f | %s |\n", c.Name, median(ns[i]), allocs[i], x[i], c.Note)
	}
	fmt.Println()
	fmt.Printf("Targets: ≤ 1.5× otter with the derived key: %.2f×, %s; ≤ 2× with a prebuilt key: %.2f×, %s; 0–1 allocations: %d, %s.\n",
		x[1], met(x[1] <= 1.5), x[2], met(x[2] <= 2), allocs[0], met(allocs[0] <= 1))
	fmt.Printf("Against otter with expiry, the like-for-like peer (a clock read per hit): %.2f× derived, %.2f× prebuilt.\n", x[3], x[4])
	fmt.Println("The near cache is itself otter, keyed by K, so it derives no key string; beyond otter's lookup a hit")
	fmt.Println("reads the monotonic clock once (`time.Since` against the Cache's epoch) to check the copy's freshness and")
	fmt.Println("compute its age, and counts the hit.")
	fmt.Println()
}

// --- 2. hit on Redis

func redisHit(addr string) {
	ctx := context.Background()
	fmt.Println("## 2. A hit, Redis on loopback (`-only 2`)")
	fmt.Println()
	fmt.Println("`GetOrLoad` hit through redisstore (one `SET NX GET` round trip: the read that would take the lease on a")
	fmt.Println("miss) against a raw go-redis `GET` and `json.Unmarshal` of the same value, on the same client. With go-redis's")
	fmt.Println("default client redisstore runs each command on a goroutine, so a call returns at its deadline even when the")
	fmt.Println("client would not; with `ContextTimeoutEnabled` it runs inline. µs/op is wall time over calls, so at 64")
	fmt.Println("goroutines it is the inverse of throughput. Target: at most 1.05× the raw GET.")
	fmt.Println()
	fmt.Println("The last two columns are a raw `SET NX GET PX` of a lease-sized value and the decode, on the same client:")
	fmt.Println("the command alone, the floor of any design whose miss costs two round trips.")
	fmt.Println()
	fmt.Println("| client | goroutines | raw GET + decode, µs/op | readthrough, µs/op | ratio | raw SET NX GET + decode, µs/op | its ratio |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	raw, _ := json.Marshal(bench.Sample)
	type side struct {
		name string
		ops  [3]func() error // raw GET, readthrough, raw SET NX GET
	}
	var sides []side
	var clients []*redis.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var near *readthrough.Cache[int, bench.Product]
	for _, cte := range []bool{false, true} {
		rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 72, ContextTimeoutEnabled: cte})
		clients = append(clients, rdb)
		ns := fmt.Sprintf("hit%v", cte)
		c, err := readthrough.New[int, bench.Product](redisstore.New(rdb), &readthrough.Options[int, bench.Product]{Namespace: ns, TTL: time.Hour})
		if err != nil {
			log.Fatal(err)
		}
		if _, err := c.GetOrLoad(ctx, 42, func(context.Context, int) (bench.Product, error) { return bench.Sample, nil }); err != nil {
			log.Fatal(err)
		}
		if cte {
			near, err = readthrough.New[int, bench.Product](redisstore.New(rdb), &readthrough.Options[int, bench.Product]{
				Namespace: ns, TTL: time.Hour, Near: readthrough.NearOptions{MaxEntries: 10_000}})
			if err != nil {
				log.Fatal(err)
			}
		}
		rawKey := ns + ":raw"
		if err := rdb.Set(ctx, rawKey, raw, time.Hour).Err(); err != nil {
			log.Fatal(err)
		}
		name := "default"
		if cte {
			name = "ContextTimeoutEnabled"
		}
		// A lease-sized value: the read a miss-in-two-round-trips design makes.
		leaseLike := make([]byte, 48)
		sides = append(sides, side{name, [3]func() error{
			func() error {
				b, err := rdb.Get(ctx, rawKey).Bytes()
				if err != nil {
					return err
				}
				var p bench.Product
				return json.Unmarshal(b, &p)
			},
			func() error {
				_, err := c.GetOrLoad(ctx, 42, func(context.Context, int) (bench.Product, error) {
					return bench.Product{}, fmt.Errorf("unexpected miss")
				})
				return err
			},
			func() error {
				b, err := rdb.Do(ctx, "set", rawKey, leaseLike, "nx", "get", "px", 5000).Text()
				if err != nil {
					return err
				}
				var p bench.Product
				return json.Unmarshal([]byte(b), &p)
			},
		}})
	}
	// Let the notification link connect, so the near copy is covered by it.
	time.Sleep(200 * time.Millisecond)
	if err := bench.WarmNear(near, 42); err != nil {
		log.Fatal(err)
	}
	nearOp := func() error {
		_, err := near.GetOrLoad(ctx, 42, func(context.Context, int) (bench.Product, error) {
			return bench.Product{}, fmt.Errorf("unexpected miss")
		})
		return err
	}

	nearNs := map[int]float64{}
	var verdicts []string
	for _, g := range []int{1, 64} {
		const n = 20000
		// Per round, in rotated order: each side's raw and readthrough, and the near hit.
		type slot struct{ side, op int }
		var slots []slot
		for s := range sides {
			slots = append(slots, slot{s, 0}, slot{s, 1}, slot{s, 2})
		}
		slots = append(slots, slot{-1, 0})
		per := map[slot][]float64{}
		for r := range *rounds {
			for k := range slots {
				sl := slots[(k+r)%len(slots)]
				if sl.side < 0 {
					const nn = 2_000_000
					per[sl] = append(per[sl], float64(parallel(g, nn, nearOp).Nanoseconds())/nn)
					continue
				}
				per[sl] = append(per[sl], float64(parallel(g, n, sides[sl.side].ops[sl.op]).Nanoseconds())/n/1000)
			}
		}
		for s, sd := range sides {
			rawT, rtT, nxT := per[slot{s, 0}], per[slot{s, 1}], per[slot{s, 2}]
			x := median(ratios(rtT, rawT))
			fmt.Printf("| %s | %d | %.1f | %.1f | %.3f | %.1f | %.3f |\n", sd.name, g, median(rawT), median(rtT), x, median(nxT), median(ratios(nxT, rawT)))
			verdicts = append(verdicts, fmt.Sprintf("%s client at %d goroutine%s %s", sd.name, g, plural(g), met(x <= 1.05)))
		}
		nearNs[g] = median(per[slot{-1, 0}])
	}
	fmt.Println()
	fmt.Printf("Target ≤ 1.05×: %s.\n", strings.Join(verdicts, "; "))
	fmt.Println("Where the difference goes. The raw `SET NX GET` column is the command's own share: a hit that is also the")
	fmt.Println("read that leases on a miss, so that a miss costs two round trips (section 3). With the default client")
	fmt.Println("redisstore hands each command to a goroutine (see its package doc), so a call wakes two goroutines instead")
	fmt.Println("of one: the gap between the two clients' rows. With `ContextTimeoutEnabled` the call runs inline. At 64")
	fmt.Println("goroutines the two cores are saturated (the client and redis-server), so the ratio is one of CPU per call:")
	fmt.Println("beyond the command, the cache builds the lease it would set, and decodes and checks the entry's header.")
	fmt.Println()
	fmt.Printf("With the near cache on (`Options.Near`), a repeat hit makes no round trip: %.0f ns/op at 1 goroutine, %.0f ns/op\n", nearNs[1], nearNs[64])
	fmt.Println("at 64 (wall time over calls), whatever the client. Redis's tracking evicts the copy when any writer changes")
	fmt.Println("the key.")
	fmt.Println()
	_ = near.Close()
}

// parallel runs n calls of op over g goroutines and returns the wall time.
func parallel(g, n int, op func() error) time.Duration {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	start := time.Now()
	for range g {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := op(); err != nil {
					log.Fatal(err)
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}
