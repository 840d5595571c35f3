// Command fleet shows what the distributed lock buys: N worker processes
// share one Redis and fire bursts of concurrent requests at cold keys,
// first with the lock on, then with it off (Lock.Disabled, single-flight
// only). It prints the upstream loads of each burst side by side.
//
//	go run ./examples/fleet                        # starts its own redis-server
//	go run ./examples/fleet -redis 127.0.0.1:6379  # or uses yours
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
)

const workerEnv = "FLEET_WORKER"

type config struct {
	Addr       string        `json:"addr"`
	Run        string        `json:"run"`
	Procs      int           `json:"procs"`
	Goroutines int           `json:"goroutines"`
	Bursts     int           `json:"bursts"`
	Latency    time.Duration `json:"latency"`
	LockOff    bool          `json:"lock_off"`
}

// report is a worker's slowest call per burst.
type report struct {
	Worst  []time.Duration `json:"worst"`
	Errors int             `json:"errors"`
}

func main() {
	if cfg := os.Getenv(workerEnv); cfg != "" {
		if err := worker(cfg); err != nil {
			log.Fatal(err)
		}
		return
	}
	cfg := config{}
	flag.StringVar(&cfg.Addr, "redis", "", "Redis address; empty starts a redis-server on loopback")
	flag.IntVar(&cfg.Procs, "procs", 8, "worker processes")
	flag.IntVar(&cfg.Goroutines, "goroutines", 32, "concurrent callers per process")
	flag.IntVar(&cfg.Bursts, "bursts", 5, "bursts, each at a new cold key")
	flag.DurationVar(&cfg.Latency, "latency", 200*time.Millisecond, "upstream latency")
	flag.Parse()

	if cfg.Addr == "" {
		srv, err := redistest.StartServer()
		if err != nil {
			log.Fatalf("no -redis given and could not start redis-server: %v", err)
		}
		defer srv.Stop()
		cfg.Addr = srv.Addr
	}
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Addr})
	defer rdb.Close()

	fmt.Printf("fleet: %d processes × %d goroutines per burst, upstream latency %v, redis %s\n\n",
		cfg.Procs, cfg.Goroutines, cfg.Latency, cfg.Addr)
	type column struct {
		loads []int
		worst []time.Duration
	}
	var cols [2]column
	for i, lockOff := range []bool{false, true} {
		c := cfg
		c.LockOff = lockOff
		c.Run = fmt.Sprintf("fleet:%d:%v", time.Now().UnixNano(), lockOff)
		worst, err := runFleet(c)
		if err != nil {
			log.Fatal(err)
		}
		for b := range cfg.Bursts {
			n, _ := rdb.Get(context.Background(), loadsKey(c.Run, b)).Int()
			cols[i].loads = append(cols[i].loads, n)
		}
		cols[i].worst = worst
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "burst\tcallers\tloads, lock on\tworst wait\tloads, lock off\tworst wait\t")
	sum := [2]int{}
	for b := range cfg.Bursts {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%v\t%d\t%v\t\n", b+1, cfg.Procs*cfg.Goroutines,
			cols[0].loads[b], cols[0].worst[b].Round(time.Millisecond), cols[1].loads[b], cols[1].worst[b].Round(time.Millisecond))
		sum[0] += cols[0].loads[b]
		sum[1] += cols[1].loads[b]
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t\t%d\t\t\n", cfg.Bursts*cfg.Procs*cfg.Goroutines, sum[0], sum[1])
	tw.Flush()
}

// runFleet starts the workers, waits for them, and returns the worst call
// of each burst across the fleet.
func runFleet(cfg config) ([]time.Duration, error) {
	enc, _ := json.Marshal(cfg)
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	worst := make([]time.Duration, cfg.Bursts)
	var mu sync.Mutex
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
			var r report
			if err := json.Unmarshal(out, &r); err != nil {
				errs <- fmt.Errorf("worker report %q: %w", out, err)
				return
			}
			if r.Errors > 0 {
				errs <- fmt.Errorf("worker saw %d errors", r.Errors)
			}
			mu.Lock()
			for b, d := range r.Worst {
				worst[b] = max(worst[b], d)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	return worst, <-errs
}

func loadsKey(run string, burst int) string { return fmt.Sprintf("%s:loads:%d", run, burst) }

// worker is one process of the fleet.
func worker(enc string) error {
	var cfg config
	if err := json.Unmarshal([]byte(enc), &cfg); err != nil {
		return err
	}
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Addr, PoolSize: cfg.Goroutines})
	defer rdb.Close()
	cache, err := readthrough.New[int, string](redisstore.New(rdb), &readthrough.Options[int, string]{
		Namespace: cfg.Run,
		Lock:      readthrough.LockOptions{Disabled: cfg.LockOff},
	})
	if err != nil {
		return err
	}
	var rep report
	for b := range cfg.Bursts {
		if err := redistest.Barrier(ctx, rdb, fmt.Sprintf("%s:arrive:%d", cfg.Run, b), cfg.Procs, 30*time.Second); err != nil {
			return err
		}
		load := func(ctx context.Context, key int) (string, error) {
			rdb.Incr(ctx, loadsKey(cfg.Run, b))
			time.Sleep(cfg.Latency)
			return "report " + strconv.Itoa(key), nil
		}
		var mu sync.Mutex
		var worst time.Duration
		var wg sync.WaitGroup
		for range cfg.Goroutines {
			wg.Go(func() {
				start := time.Now()
				_, err := cache.GetOrLoad(ctx, b, load)
				d := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				worst = max(worst, d)
				if err != nil {
					rep.Errors++
				}
			})
		}
		wg.Wait()
		rep.Worst = append(rep.Worst, worst)
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}
