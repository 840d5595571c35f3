// Package mixed is the mixed-workload benchmark: readthrough against its
// peers under a Zipf-distributed read load, with real worker processes
// sharing one redis-server, as a fleet of services would.
//
// Each run starts Procs worker processes (this same executable, re-run with
// a job in its environment: call [MaybeWorker] first thing in main or
// TestMain) of Goroutines goroutines each, all calling one system for keys
// drawn from Zipf(s) over Keys keys. On a miss the system calls a loader
// that sleeps LoadLatency and returns a document of ValueSize bytes
// stamped with its load time, so every served value's age is known.
//
// A run is cold: Redis is flushed and the processes are new. They start
// together at a time the coordinator sets, call for Warmup (not measured),
// then for Duration (measured). Closed loop calls as fast as each goroutine
// can; paced calls at Rate per goroutine, the same for every system, so
// latencies compare at an equal load. Rounds interleave the systems (round
// 1: A B C D, round 2: B C D A, ...) and the report takes medians, and
// ratios against readthrough within the same round.
//
// Measured per run: calls, latency (p50, p99), CPU per call (getrusage of
// each worker), round trips to Redis per call (a go-redis hook), Redis
// commands, bytes and CPU per call (INFO deltas over the measured window),
// loads against the ideal (the fewest loads that serve the same requests
// without a value past its TTL), and the age of every value served (call
// start − loaded-at). [Report.Markdown] prints it, with how to read it.
//
// A new contender is one [Contender] in [Contenders]: a name and a func
// that builds a [System] from an [Env].
//
//	go run ./cmd/mixed > mixed.md              # from bench/; -h for the knobs
package mixed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Mode is how callers pace themselves.
type Mode int

const (
	// Closed: each goroutine calls again as soon as a call returns.
	Closed Mode = iota
	// Paced: each goroutine calls Config.Rate times a second.
	Paced
)

// String names the mode as the report does.
func (m Mode) String() string {
	if m == Paced {
		return "paced"
	}
	return "closed loop"
}

// Config is one benchmark: every combination of Procs and Modes, Rounds
// times, each round running every system. Zero fields take the defaults
// noted, which are the measurement the benchmark was built for.
type Config struct {
	Addr       string        // redis-server address; required
	Systems    []string      // contender names; default: every one with a New
	Procs      []int         // worker processes per run; default 1 and 4
	Goroutines int           // calling goroutines per process; default 16
	Modes      []Mode        // default Closed, then Paced
	Rate       float64       // paced calls per second per goroutine; default 50
	Rounds     int           // default 3
	Warmup     time.Duration // unmeasured start of each run; default TTL
	Duration   time.Duration // measured part of each run; default 5s
	Keys       int           // distinct keys; default 10,000
	ZipfS      float64       // Zipf exponent, above 1; default 1.1
	ValueSize  int           // bytes of JSON per value; default 1024
	TTL        time.Duration // default 2s (go-redis/cache needs at least 1s)
	// LoadLatency is how long the loader takes; default 10ms.
	LoadLatency time.Duration
	// Progress, when not nil, gets a line per run.
	Progress io.Writer
	// CPUProfile, when not empty, is a directory where each worker
	// writes a CPU profile of its measured window, named after the
	// system, P, mode, round and worker.
	CPUProfile string
}

func (c Config) withDefaults() (Config, error) {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Goroutines, 16)
	def(&c.Rounds, 3)
	def(&c.Keys, 10_000)
	def(&c.ValueSize, 1024)
	defDur(&c.TTL, 2*time.Second)
	defDur(&c.Warmup, c.TTL)
	defDur(&c.Duration, 5*time.Second)
	defDur(&c.LoadLatency, 10*time.Millisecond)
	if len(c.Procs) == 0 {
		c.Procs = []int{1, 4}
	}
	if len(c.Modes) == 0 {
		c.Modes = []Mode{Closed, Paced}
	}
	c.Rate = cmp.Or(c.Rate, 50)
	c.ZipfS = cmp.Or(c.ZipfS, 1.1)
	if len(c.Systems) == 0 {
		for _, ct := range Contenders() {
			if ct.New != nil {
				c.Systems = append(c.Systems, ct.Name)
			}
		}
	}

	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("an Addr is required"))
	}
	for _, name := range c.Systems {
		ct, ok := contender(name)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("unknown system %q", name))
		case ct.New == nil:
			errs = append(errs, fmt.Errorf("system %q is not built yet", name))
		}
	}
	if slices.ContainsFunc(c.Procs, func(p int) bool { return p < 1 }) || c.Goroutines < 1 || c.Rounds < 1 || c.Keys < 1 {
		errs = append(errs, errors.New("each of Procs, Goroutines, Rounds and Keys must be positive"))
	}
	if c.Keys >= 1<<31 {
		errs = append(errs, errors.New("the key count must fit the trace's 31 bits"))
	}
	if c.ZipfS <= 1 {
		errs = append(errs, errors.New("ZipfS must be above 1"))
	}
	if c.Rate < 0 || c.TTL < 0 || c.Warmup < 0 || c.Duration < 0 || c.LoadLatency < 0 {
		errs = append(errs, errors.New("negative rate or duration"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("mixed: %w", err)
	}
	return c, nil
}

func contender(name string) (Contender, bool) {
	for _, ct := range Contenders() {
		if ct.Name == name {
			return ct, true
		}
	}
	return Contender{}, false
}

// Run runs the benchmark against the redis-server at cfg.Addr, which it
// flushes before every run, and returns every run's result. Its workers
// are this executable re-run, so the program (or TestMain) must call
// [MaybeWorker] first. It stops at the first run that fails.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := newCoordinator(cfg)
	if err != nil {
		return nil, err
	}
	defer c.close()
	rep := &Report{Config: cfg, Started: time.Now()}
	for _, procs := range cfg.Procs {
		for _, mode := range cfg.Modes {
			for round := range cfg.Rounds {
				for i := range cfg.Systems {
					sys := cfg.Systems[(i+round)%len(cfg.Systems)]
					r, err := c.run(ctx, sys, procs, mode, round)
					if err != nil {
						return rep, fmt.Errorf("mixed: %s, P=%d, %s, round %d: %w", sys, procs, mode, round+1, err)
					}
					if cfg.Progress != nil {
						fmt.Fprintf(cfg.Progress, "P=%d %-11s round %d  %-22s %9.0f calls/s  p50 %-9v loads %d (ideal %d)  max age %v\n",
							procs, mode, round+1, sys, r.Throughput(), r.P50.Round(100*time.Nanosecond), r.Loads, r.Ideal, r.MaxAge.Round(time.Millisecond))
					}
					rep.Runs = append(rep.Runs, r)
				}
			}
		}
	}
	return rep, nil
}
