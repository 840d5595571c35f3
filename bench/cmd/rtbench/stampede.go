package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	rediscache "github.com/go-redis/cache/v9"
	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/bench"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
)

// --- 4. stampede across processes

type stampedeConfig struct {
	Addr       string        `json:"addr"`
	Row        string        `json:"row"`
	Key        string        `json:"key"`
	Procs      int           `json:"procs"`
	Goroutines int           `json:"goroutines"`
	Latency    time.Duration `json:"latency"`
}

var stampedeRows = []string{"readthrough, lease on (default)", "readthrough, lease off (single-flight only)", "go-redis/cache Once", "no cache"}

func stampede(addr string) {
	const latency = 100 * time.Millisecond
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	fmt.Println("## 4. Stampede across processes (`-only 4`)")
	fmt.Println()
	fmt.Printf("P worker processes × G goroutines call a cold key at once (a Redis barrier lines them up); the loader takes L = %v\n", latency)
	fmt.Println("and counts its calls in Redis. Each cell: loads, then p50 / p99 of caller latency minus L, in ms.")
	fmt.Println("Target: exactly 1 load in every cell of readthrough with the lease.")
	fmt.Println()
	header := "| contender |"
	sep := "| --- |"
	type cell struct{ p, g int }
	var cells []cell
	for _, g := range []int{1, 64} {
		for _, p := range []int{1, 4, 16} {
			cells = append(cells, cell{p, g})
			header += fmt.Sprintf(" P=%d G=%d |", p, g)
			sep += " ---: |"
		}
	}
	fmt.Println(header)
	fmt.Println(sep)
	leaseOK := true
	for _, row := range stampedeRows {
		line := "| " + row + " |"
		for _, c := range cells {
			key := fmt.Sprintf("stampede:%d", time.Now().UnixNano())
			lat, err := runStampede(stampedeConfig{Addr: addr, Row: row, Key: key, Procs: c.p, Goroutines: c.g, Latency: latency})
			if err != nil {
				log.Fatal(err)
			}
			loads, _ := rdb.Get(context.Background(), key+":loads").Int()
			if row == stampedeRows[0] && loads != 1 {
				leaseOK = false
			}
			slices.Sort(lat)
			over := func(q float64) float64 {
				return float64(lat[int(q*float64(len(lat)-1))]-latency) / float64(time.Millisecond)
			}
			line += fmt.Sprintf(" %d load%s; %.1f / %.1f |", loads, plural(loads), over(0.5), over(0.99))
		}
		fmt.Println(line)
	}
	fmt.Println()
	fmt.Printf("Target (1 load in every cell with the lease): %s. Processes that lose the race wait on the holder's lease and\n", met(leaseOK))
	fmt.Println("are woken by Redis's invalidation when the value lands (scenario 5).")
	fmt.Println()
}

func runStampede(cfg stampedeConfig) ([]time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	enc, _ := json.Marshal(cfg)
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Procs)
	for range cfg.Procs {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), workerEnv+"="+string(enc))
		cmd.Stderr = os.Stderr
		wg.Go(func() {
			out, err := cmd.Output()
			if err != nil {
				errs <- fmt.Errorf("worker: %w", err)
				return
			}
			var lat []time.Duration
			if err := json.Unmarshal(out, &lat); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	return all, <-errs
}

func stampedeWorker(enc string) error {
	var cfg stampedeConfig
	if err := json.Unmarshal([]byte(enc), &cfg); err != nil {
		return err
	}
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Addr, PoolSize: cfg.Goroutines + 4})
	defer rdb.Close()
	load := func(ctx context.Context) (bench.Product, error) {
		rdb.Incr(ctx, cfg.Key+":loads")
		time.Sleep(cfg.Latency)
		return bench.Sample, nil
	}
	var call func() error
	closeCache := func() error { return nil }
	switch cfg.Row {
	case stampedeRows[0], stampedeRows[1]:
		c, err := readthrough.New[string, bench.Product](redisstore.New(rdb), &readthrough.Options[string, bench.Product]{
			Lock: readthrough.LockOptions{Disabled: cfg.Row == stampedeRows[1]},
		})
		if err != nil {
			return err
		}
		// A load's answer is written back after its callers get it: Close
		// waits for that write, which a process that exited at once would
		// lose, leaving its lease to expire while the others wait on it.
		closeCache = c.Close
		call = func() error {
			_, err := c.GetOrLoad(ctx, cfg.Key, func(ctx context.Context, _ string) (bench.Product, error) { return load(ctx) })
			return err
		}
	case stampedeRows[2]:
		gc := rediscache.New(&rediscache.Options{Redis: rdb})
		call = func() error {
			var p bench.Product
			return gc.Once(&rediscache.Item{Ctx: ctx, Key: cfg.Key, Value: &p, TTL: time.Hour,
				Do: func(*rediscache.Item) (any, error) { return load(ctx) }})
		}
	default:
		call = func() error { _, err := load(ctx); return err }
	}
	// Open the connections first: a thousand dials at once overflow the
	// server's accept backlog and measure TCP retransmits, not caching.
	var warm sync.WaitGroup
	for range cfg.Goroutines + 2 {
		warm.Go(func() { rdb.Ping(ctx) })
	}
	warm.Wait()
	if err := redistest.Barrier(ctx, rdb, cfg.Key+":arrive", cfg.Procs, 30*time.Second); err != nil {
		return err
	}
	lat := make([]time.Duration, cfg.Goroutines)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := range cfg.Goroutines {
		wg.Go(func() {
			start := time.Now()
			if err := call(); err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
			lat[i] = time.Since(start)
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	if err := closeCache(); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(lat)
}
