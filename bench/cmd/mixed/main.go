// Command mixed runs the mixed-workload benchmark (package
// bench/mixed): readthrough against sturdyc and go-redis/cache, each as
// real worker processes over one redis-server, and prints a markdown
// report on stdout (progress on stderr).
//
//	go run ./cmd/mixed -rounds 3 -duration 5s > mixed.md
//
// It starts its own redis-server on loopback unless -redis is given; it
// flushes the server before every run, so never point it at one you use.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/readthrough-go/readthrough/bench/mixed"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
)

func main() {
	mixed.MaybeWorker() // a worker runs its job and exits here
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	var cfg mixed.Config
	addr := flag.String("redis", "", "address of a redis-server to flush and use; empty starts one on loopback")
	systems := flag.String("systems", "", "comma-separated systems; empty runs every one that is built: "+names())
	procs := flag.String("procs", "1,4", "comma-separated worker process counts")
	modes := flag.String("modes", "closed,paced", "comma-separated modes: closed, paced")
	flag.IntVar(&cfg.Goroutines, "g", 16, "goroutines per process")
	flag.Float64Var(&cfg.Rate, "rate", 50, "paced: calls per second per goroutine (keep the slowest system well below its closed-loop rate)")
	flag.IntVar(&cfg.Rounds, "rounds", 3, "interleaved rounds; the report takes medians")
	flag.DurationVar(&cfg.Warmup, "warmup", 0, "unmeasured start of each run (default: the TTL)")
	flag.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured part of each run")
	flag.IntVar(&cfg.Keys, "keys", 10_000, "distinct keys")
	flag.Float64Var(&cfg.ZipfS, "zipf", 1.1, "Zipf exponent, above 1")
	flag.IntVar(&cfg.ValueSize, "size", 1024, "bytes of JSON per value")
	flag.DurationVar(&cfg.TTL, "ttl", 2*time.Second, "TTL (go-redis/cache needs at least 1s)")
	flag.DurationVar(&cfg.LoadLatency, "load", 10*time.Millisecond, "loader latency")
	flag.StringVar(&cfg.CPUProfile, "cpuprofile", "", "directory for a CPU profile of each worker's measured window (go tool pprof)")
	flag.Parse()

	if *systems != "" {
		cfg.Systems = strings.Split(*systems, ",")
	}
	for _, s := range strings.Split(*procs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-procs: %w", err)
		}
		cfg.Procs = append(cfg.Procs, n)
	}
	for _, m := range strings.Split(*modes, ",") {
		switch strings.TrimSpace(m) {
		case "closed":
			cfg.Modes = append(cfg.Modes, mixed.Closed)
		case "paced":
			cfg.Modes = append(cfg.Modes, mixed.Paced)
		default:
			return fmt.Errorf("-modes: unknown mode %q", m)
		}
	}

	cfg.Addr = *addr
	if cfg.Addr == "" {
		srv, err := redistest.StartServer("--maxclients", "10000")
		if err != nil {
			return err
		}
		defer srv.Stop()
		cfg.Addr = srv.Addr
	}
	cfg.Progress = os.Stderr
	rep, err := mixed.Run(context.Background(), cfg)
	if err != nil {
		return err
	}
	rep.Markdown(os.Stdout)
	return nil
}

func names() string {
	var s []string
	for _, c := range mixed.Contenders() {
		n := c.Name
		if c.New == nil {
			n += " (not built yet)"
		}
		s = append(s, n)
	}
	return strings.Join(s, ", ")
}
