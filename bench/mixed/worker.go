package mixed

import (
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// workerEnv carries a worker's job, as JSON, from the coordinator.
const workerEnv = "READTHROUGH_MIXED_WORKER"

// job is what one worker process runs.
type job struct {
	Addr        string
	System      string
	Proc        int // this worker's index, 0 to Procs-1
	Procs       int
	Goroutines  int
	Mode        Mode
	Rate        float64
	Keys        int
	ZipfS       float64
	ValueSize   int
	TTL         time.Duration
	LoadLatency time.Duration
	Warmup      time.Duration
	Duration    time.Duration
	Namespace   string // unique to the run; also the prefix of the harness's own keys
	Seed        uint64
	Round       int
	CPUProfile  string // a directory for this worker's CPU profile; empty: none
}

func (j job) readyKey() string { return j.Namespace + ":harness:ready" }
func (j job) goKey() string    { return j.Namespace + ":harness:go" }

// workerResult is what a worker reports, gob-encoded on its stdout. Every
// count is over the measured window: calls that started in it, loads that
// started in it.
type workerResult struct {
	Calls, Errors, Wrong uint64
	FirstError           string
	Latency              hist
	MaxAge               time.Duration
	OverTTL              uint64
	Loads                uint64
	CPU                  time.Duration // user + system time of the process
	RoundTrips           uint64        // commands and pipelines sent to Redis
	StoreErrors          uint64
	// Trace holds key<<32 | millisecond since the start (warm-up
	// included) for every key this process was asked for in that
	// millisecond: sorted, no repeats.
	Trace []uint64
}

// MaybeWorker runs this process as a benchmark worker, and exits, if Run
// started it as one; otherwise it returns at once. Call it first in main,
// and in TestMain of any test that calls Run, before flags are parsed.
func MaybeWorker() {
	enc := os.Getenv(workerEnv)
	if enc == "" {
		return
	}
	var j job
	err := json.Unmarshal([]byte(enc), &j)
	var res *workerResult
	if err == nil {
		res, err = runWorker(context.Background(), j)
	}
	if err == nil {
		err = gob.NewEncoder(os.Stdout).Encode(res)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mixed worker %s #%d: %v\n", j.System, j.Proc, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// worker is one process's share of a run.
type worker struct {
	j              job
	t0, t1, t2     time.Time // start, end of warm-up, end
	bodyLen        int
	loads, loadSeq atomic.Uint64
	trace          *trace
}

func runWorker(ctx context.Context, j job) (*workerResult, error) {
	ct, ok := contender(j.System)
	if !ok || ct.New == nil {
		return nil, fmt.Errorf("no system %q", j.System)
	}
	pool := 2*j.Goroutines + 8
	// ContextTimeoutEnabled, as redisstore's docs advise: deadlines then
	// bound the socket reads, with no goroutine per command. The peers
	// pass contexts without deadlines, so it changes nothing for them.
	rdb := redis.NewClient(&redis.Options{Addr: j.Addr, PoolSize: pool, ContextTimeoutEnabled: true})
	defer rdb.Close()
	trips := &roundTrips{}
	rdb.AddHook(trips)
	sys, err := ct.New(Env{Redis: rdb, Hook: trips, Addr: j.Addr, PoolSize: pool, Namespace: j.Namespace, TTL: j.TTL, Keys: j.Keys})
	if err != nil {
		return nil, err
	}
	defer sys.Close()

	// Open the connections before the start, so dials are not measured.
	var warm sync.WaitGroup
	for range j.Goroutines + 2 {
		warm.Go(func() { rdb.Ping(ctx) })
	}
	warm.Wait()
	if err := rdb.Incr(ctx, j.readyKey()).Err(); err != nil {
		return nil, err
	}
	got, err := rdb.BLPop(ctx, time.Minute, j.goKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("waiting for the start: %w", err)
	}
	t0ns, err := strconv.ParseInt(got[1], 10, 64)
	if err != nil {
		return nil, err
	}

	w := &worker{j: j, bodyLen: bodyLen(j.ValueSize), trace: newTrace(j.Keys)}
	w.t0 = time.Unix(0, t0ns)
	w.t1 = w.t0.Add(j.Warmup)
	w.t2 = w.t1.Add(j.Duration)
	trips.from.Store(w.t1.UnixNano())
	trips.to.Store(w.t2.UnixNano())

	var cpu [2]time.Duration
	var profErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		var stop func() error
		for i, at := range []time.Time{w.t1, w.t2} {
			time.Sleep(time.Until(at))
			cpu[i] = cpuTime()
			if j.CPUProfile != "" && i == 0 {
				stop, profErr = startProfile(j)
			}
		}
		if stop != nil {
			profErr = stop()
		}
	})
	parts := make([]*workerResult, j.Goroutines)
	for g := range parts {
		wg.Go(func() { parts[g] = w.call(ctx, sys, g) })
	}
	wg.Wait()

	if profErr != nil {
		return nil, fmt.Errorf("cpu profile: %w", profErr)
	}
	res := &workerResult{Latency: newHist(), Loads: w.loads.Load(), CPU: cpu[1] - cpu[0], RoundTrips: trips.n.Load()}
	for _, p := range parts {
		res.Calls += p.Calls
		res.Errors += p.Errors
		res.Wrong += p.Wrong
		if res.FirstError == "" {
			res.FirstError = p.FirstError
		}
		res.Latency.add(p.Latency)
		res.MaxAge = max(res.MaxAge, p.MaxAge)
		res.OverTTL += p.OverTTL
		res.Trace = append(res.Trace, p.Trace...)
	}
	res.Trace = sortDedup(res.Trace)
	if sc, ok := sys.(storeErrorCounter); ok {
		res.StoreErrors = sc.StoreErrors()
	}
	return res, nil
}

// startProfile starts a CPU profile of this worker into j.CPUProfile, and
// returns the function that stops and writes it.
func startProfile(j job) (stop func() error, err error) {
	name := fmt.Sprintf("%s-P%d-%s-r%d-w%d.pprof", j.System, j.Procs, j.Mode, j.Round+1, j.Proc)
	name = strings.NewReplacer("/", "_", "+", "_", " ", "_").Replace(name)
	f, err := os.Create(filepath.Join(j.CPUProfile, name))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// load is the upstream every system calls on a miss.
func (w *worker) load(ctx context.Context, key int) (Value, error) {
	if now := time.Now(); !now.Before(w.t1) && now.Before(w.t2) {
		w.loads.Add(1)
	}
	t := time.NewTimer(w.j.LoadLatency)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return Value{}, ctx.Err()
	}
	seq := uint64(w.j.Proc)<<40 | w.loadSeq.Add(1)
	v := makeValue(key, w.bodyLen, 0, seq)
	// Stamped last, as close as the loader can get to its return, which is
	// when readthrough starts counting the value's freshness.
	v.LoadedAt = time.Now().UnixNano()
	return v, nil
}

// call is one goroutine's loop, from t0 to t2.
func (w *worker) call(ctx context.Context, sys System, g int) *workerResult {
	r := rand.New(rand.NewPCG(w.j.Seed, uint64(w.j.Proc)<<32|uint64(g)))
	zipf := rand.NewZipf(r, w.j.ZipfS, 1, uint64(w.j.Keys-1))
	res := &workerResult{Latency: newHist()}
	// A guess at this goroutine's trace, so appends rarely copy.
	res.Trace = make([]uint64, 0, 1<<14)
	ttl := w.j.TTL
	t0ns := w.t0.UnixNano()

	var interval time.Duration
	next := w.t0
	if w.j.Mode == Paced && w.j.Rate > 0 {
		interval = time.Duration(float64(time.Second) / w.j.Rate)
		next = next.Add(rand.N(interval)) // spread the goroutines' phases
	}
	if d := time.Until(next); d > 0 {
		time.Sleep(d)
	}
	for {
		if interval > 0 {
			// Keep to the schedule; a goroutine that fell behind calls at
			// once until it catches up, so the offered load holds.
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			next = next.Add(interval)
		}
		start := time.Now()
		if !start.Before(w.t2) {
			break
		}
		key := int(zipf.Uint64())
		ms := max(start.UnixNano()-t0ns, 0) / int64(time.Millisecond) // wall clock: it may step back
		res.Trace = w.trace.note(res.Trace, key, ms)
		v, err := sys.Get(ctx, key, w.load)
		took := time.Since(start)
		if start.Before(w.t1) {
			continue
		}
		res.Calls++
		res.Latency.record(took)
		switch {
		case err != nil:
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
		case v.Key != key:
			res.Wrong++
		default:
			// Age at the call's start: the freshest the value could have
			// been judged, whatever the call spent reaching Redis.
			age := time.Duration(start.UnixNano() - v.LoadedAt)
			res.MaxAge = max(res.MaxAge, age)
			if age > ttl {
				res.OverTTL++
			}
		}
	}
	return res
}

var errNoResult = errors.New("worker exited without a result")

// roundTrips is a go-redis hook that counts what a client sends to Redis
// in the measured window: each command, and each pipeline once, is one
// network round trip. (The server's own count also has the commands a
// script runs inside one EVALSHA.)
type roundTrips struct {
	from, to atomic.Int64 // the window, UnixNano; empty until the start is known
	n        atomic.Uint64
}

var _ redis.Hook = (*roundTrips)(nil)

func (h *roundTrips) count() {
	if now := time.Now().UnixNano(); now >= h.from.Load() && now < h.to.Load() {
		h.n.Add(1)
	}
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count()
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.count()
		return next(ctx, cmds)
	}
}
