package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/bench"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
)

// --- 3. round trips per call

// linkCommands are what redisstore's notification link sends on the
// client's connections (set-up, heartbeat, tracking checks): not the data
// path. Those made only of CLIENT and HELLO are already counted apart
// (Counts.Setup).
var linkCommands = map[string]bool{"ping": true, "wait": true, "client": true, "hello": true,
	"subscribe": true, "unsubscribe": true}

// dataPath returns the round trips and commands of c on the data path.
// The link's commands are each sent alone, so each is one round trip.
func dataPath(c redistest.Counts) (trips int, cmds map[string]int) {
	trips = c.RoundTrips
	cmds = map[string]int{}
	for name, n := range c.Commands {
		if linkCommands[name] {
			if name != "client" && name != "hello" {
				trips -= n
			}
			continue
		}
		cmds[name] = n
	}
	return trips, cmds
}

// tripCall is one row of scenario 3: warm prepares the store through a
// Cache of its own (closed, so its write-backs have landed), call is what
// is counted, through a fresh Cache.
type tripCall struct {
	name, target string
	opts         readthrough.Options[int, string]
	warm, call   func(c *readthrough.Cache[int, string]) error
}

func roundTrips(addr string) {
	ctx := context.Background()
	value := func(_ context.Context, k int) (string, error) { return "v", nil }
	missing := func(context.Context, int) (string, error) { return "", readthrough.ErrNotFound }
	batchOf := func(n, from int) []int {
		ks := make([]int, n)
		for i := range ks {
			ks[i] = from + i
		}
		return ks
	}
	loadMany := func(_ context.Context, ks []int) (map[int]string, error) {
		m := map[int]string{}
		for _, k := range ks {
			m[k] = "v"
		}
		return m, nil
	}
	none := func(*readthrough.Cache[int, string]) error { return nil }
	rows := []tripCall{
		{name: "uncontended miss", target: "Redis 2; generic ≤ 3", warm: none,
			call: func(c *readthrough.Cache[int, string]) error { _, err := c.GetOrLoad(ctx, 1, value); return err }},
		{name: "hit", target: "Redis 1",
			warm: func(c *readthrough.Cache[int, string]) error { _, err := c.GetOrLoad(ctx, 1, value); return err },
			call: func(c *readthrough.Cache[int, string]) error { _, err := c.GetOrLoad(ctx, 1, value); return err }},
		{name: "miss on a missing key, NegativeTTL set", target: "Redis 2; generic ≤ 3",
			opts: readthrough.Options[int, string]{NegativeTTL: time.Minute}, warm: none,
			call: func(c *readthrough.Cache[int, string]) error {
				if _, err := c.GetOrLoad(ctx, 1, missing); !errors.Is(err, readthrough.ErrNotFound) {
					return fmt.Errorf("want a not-found, got %v", err)
				}
				return nil
			}},
		{name: "100-key batch, all cached", target: "Redis 1",
			warm: func(c *readthrough.Cache[int, string]) error {
				_, err := c.GetOrLoadMany(ctx, batchOf(100, 0), loadMany)
				return err
			},
			call: func(c *readthrough.Cache[int, string]) error {
				_, err := c.GetOrLoadMany(ctx, batchOf(100, 0), loadMany)
				return err
			}},
		{name: "100-key batch, 10 misses", target: "Redis 2; a small constant",
			warm: func(c *readthrough.Cache[int, string]) error {
				_, err := c.GetOrLoadMany(ctx, batchOf(90, 0), loadMany)
				return err
			},
			call: func(c *readthrough.Cache[int, string]) error {
				_, err := c.GetOrLoadMany(ctx, batchOf(100, 0), loadMany)
				return err
			}},
	}

	fmt.Println("## 3. Store round trips per call (`-only 3`)")
	fmt.Println()
	fmt.Println("One uncontended call on a fresh Cache (near cache off), what it sends to the store. memstore: every call")
	fmt.Println("on the store, counted by a wrapper with exactly memstore's capabilities (compare-and-swap, batches,")
	fmt.Println("notifications, `NonBlocking`; no `GetOrSet`), so the cache takes memstore's own path. Redis: round trips")
	fmt.Println("(a command, or a pipeline) counted on the client by `redistest.CountCommands`, the commands in")
	fmt.Println("parentheses, the notification link's own commands (PING, WAIT, CLIENT) left out. Momento is not reachable")
	fmt.Println("here: its column is memstore's calls priced as momentostore sends them (it has the same capabilities):")
	fmt.Println("one RPC per call; a batch's Gets as one GetBatch, its Sets as one SetBatch per TTL, each other operation as")
	fmt.Println("its own RPC, run concurrently (RPCs, then sequential waves).")
	fmt.Println()
	fmt.Println("| call | memstore calls | Redis round trips | Momento RPCs (waves) | target |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	allMet := true
	for i, row := range rows {
		// memstore
		mem := bench.NewCountedMemstore()
		memCount := func() string {
			calls, batches := mem.Calls()
			total := 0
			var parts []string
			for _, m := range slices.Sorted(maps.Keys(calls)) {
				total += calls[m]
				if m == "Batch" {
					continue
				}
				parts = append(parts, fmt.Sprintf("%s %d", m, calls[m]))
			}
			for _, b := range batches {
				var ops []string
				for _, k := range slices.Sorted(maps.Keys(b.Ops)) {
					ops = append(ops, fmt.Sprintf("%d %s", b.Ops[k], k))
				}
				parts = append(parts, "Batch of "+strings.Join(ops, ", "))
			}
			return fmt.Sprintf("**%d**: %s", total, strings.Join(parts, "; "))
		}
		memTotal := func() int {
			calls, _ := mem.Calls()
			n := 0
			for _, c := range calls {
				n += c
			}
			return n
		}
		runTrip(mem, row)
		memCell, memN := memCount(), memTotal()
		rpcs, waves := mem.MomentoRPCs()

		// Redis
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		counter := redistest.CountCommands(rdb)
		st := redisstore.New(rdb)
		flushNamespace(rdb, "trips")
		runTrip(st, row, counter.Reset)
		trips, cmds := dataPath(counter.Snapshot())
		rdb.Close()
		var parts []string
		for _, name := range slices.SortedFunc(maps.Keys(cmds), func(a, b string) int { return cmp.Compare(cmds[b], cmds[a]) }) {
			parts = append(parts, fmt.Sprintf("%s %d", strings.ToUpper(name), cmds[name]))
		}
		redisCell := fmt.Sprintf("**%d** (%s)", trips, strings.Join(parts, ", "))

		ok := true
		switch i {
		case 0, 2:
			ok = trips == 2 && memN <= 3
		case 1, 3:
			ok = trips == 1
		case 4:
			ok = trips == 2
		}
		allMet = allMet && ok
		fmt.Printf("| %s | %s | %s | %d (%d) | %s: %s |\n", row.name, memCell, redisCell, rpcs, waves, row.target, met(ok))
	}
	fmt.Println()
	fmt.Printf("Targets: %s. On Redis a read is `SET key lease NX GET PX ttl`: a value comes back as it is (a hit, one\n", met(allMet))
	fmt.Println("round trip), and on a miss the lease is already taken, so the load's answer is written by one")
	fmt.Println("compare-and-swap script (`EVALSHA`). A store without GetOrSet reads, then takes the lease with SetIfAbsent,")
	fmt.Println("then swaps: three. A batch does the same with one pipeline (or batch) per step, whatever the number of keys.")
	fmt.Println()
}

// runTrip warms the store through one Cache, closes it (its write-backs
// land), then makes the counted call through a fresh Cache, which it
// closes before returning so the call's own write-backs are counted.
// reset, if given, is called just before the counted call.
func runTrip(st readthrough.Store, row tripCall, reset ...func()) {
	newCache := func() *readthrough.Cache[int, string] {
		opts := row.opts
		opts.Namespace = "trips"
		c, err := readthrough.New(st, &opts)
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	w := newCache()
	// A miss on a key of its own first: a fresh server then has the
	// store's scripts loaded, as it has in steady state (otherwise the
	// first compare-and-swap is an EVALSHA answered NOSCRIPT, then EVAL).
	if _, err := w.GetOrLoad(context.Background(), -1, func(context.Context, int) (string, error) { return "v", nil }); err != nil {
		log.Fatal(err)
	}
	if err := row.warm(w); err != nil {
		log.Fatal(err)
	}
	_ = w.Close()
	c := newCache()
	// Let the notification link (if any) connect before counting.
	time.Sleep(100 * time.Millisecond)
	if m, ok := st.(*bench.CountedMemstore); ok {
		m.Reset()
	}
	for _, r := range reset {
		r()
	}
	if err := row.call(c); err != nil {
		log.Fatalf("rtbench: %s: %v", row.name, err)
	}
	_ = c.Close()
}

// flushNamespace deletes every key under ns.
func flushNamespace(rdb *redis.Client, ns string) {
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, ns+":*").Result()
	if err != nil {
		log.Fatal(err)
	}
	if len(keys) > 0 {
		rdb.Del(ctx, keys...)
	}
}
