package main

import (
	"fmt"
	"log"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/bench"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/viccon/sturdyc"
)

// --- 7. batches

func batches(addr string) {
	fmt.Println("## 7. Batches (`-only 7`)")
	fmt.Println()
	fmt.Printf("A call for %d keys, %d of them cached and %d never seen before (new ones every call): `GetOrLoadMany` (one\n",
		bench.BatchSize, bench.BatchCached, bench.BatchSize-bench.BatchCached)
	fmt.Printf("batch loader call for the missing keys), the same with the near cache on, %d `GetOrLoad` calls one after\n", bench.BatchSize)
	fmt.Println("another, and sturdyc's `GetOrFetchBatch` (in process on memstore's line; with its distributed storage on")
	fmt.Println("Redis's, its cached keys still answered from its own memory). The loaders return at once, so the time is")
	fmt.Println("the caches' own: with a real upstream add its latency once per loader call. Round trips are store calls on")
	fmt.Println("memstore, and commands or pipelines on Redis (counted on each contender's own client).")
	fmt.Println()
	fmt.Println("| store | contender | time per call | store round trips per call | loader calls per call |")
	fmt.Println("| --- | --- | ---: | ---: | ---: |")
	var clients []*redis.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	redisClient := func() (*redis.Client, func() int) {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		clients = append(clients, rdb)
		counter := redistest.CountCommands(rdb)
		return rdb, func() int {
			trips, _ := dataPath(counter.Snapshot())
			return trips
		}
	}
	redisBackend := bench.BatchBackend{
		Name: "Redis",
		NewStore: func() (readthrough.Store, func() int) {
			rdb, trips := redisClient()
			return redisstore.New(rdb), trips
		},
		Sturdy: func() (sturdyc.DistributedStorage, func() int) {
			rdb, trips := redisClient()
			return &bench.SturdyStorage{Redis: rdb, TTL: time.Hour}, trips
		},
	}
	for _, b := range []struct {
		backend bench.BatchBackend
		n       int
	}{{bench.MemstoreBackend(), 300}, {redisBackend, 100}} {
		cases, err := bench.BatchCases(b.backend)
		if err != nil {
			log.Fatal(err)
		}
		times := make([][]float64, len(cases))
		trips := make([][]float64, len(cases))
		loads := make([][]float64, len(cases))
		for r := range *rounds {
			for k := range cases {
				i := (k + r) % len(cases)
				c := cases[i]
				t0, l0 := c.RoundTrips(), c.Loads()
				start := time.Now()
				for range b.n {
					if err := c.Op(); err != nil {
						log.Fatal(err)
					}
				}
				el := time.Since(start)
				time.Sleep(20 * time.Millisecond) // write-backs after the answer land
				times[i] = append(times[i], float64(el)/float64(b.n))
				trips[i] = append(trips[i], float64(c.RoundTrips()-t0)/float64(b.n))
				loads[i] = append(loads[i], float64(c.Loads()-l0)/float64(b.n))
			}
		}
		for i, c := range cases {
			fmt.Printf("| %s | %s | %s | %.2f | %.2f |\n", b.backend.Name, c.Name,
				fmtDur(time.Duration(median(times[i]))), median(trips[i]), median(loads[i]))
		}
	}
	fmt.Println()
}

// fmtDur writes d in µs or ms, three significant digits.
func fmtDur(d time.Duration) string {
	if d >= time.Millisecond {
		return fmt.Sprintf("%.3g ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.3g µs", float64(d)/float64(time.Microsecond))
}
