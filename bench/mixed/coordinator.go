package mixed

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RunResult is one system's run: Procs processes, one mode, one round.
type RunResult struct {
	System string
	Procs  int
	Mode   Mode
	Round  int // from 0

	Window        time.Duration // the measured part
	Offered       float64       // paced: calls per second offered by the fleet; 0 for closed loop
	Calls         uint64
	Errors, Wrong uint64 // calls that failed; values served for another key
	FirstError    string
	P50, P99      time.Duration
	CPU           time.Duration // the workers' user + system time in the window
	RoundTrips    uint64        // commands and pipelines the workers sent in the window
	RedisCmds     uint64        // commands the server processed in the window
	// RedisByCommand splits RedisCmds by command name (lower case), the
	// harness's own INFO left out.
	RedisByCommand map[string]uint64
	RedisBytes     uint64        // bytes in and out of the server in the window
	RedisCPU       time.Duration // the server's user + system time in the window
	Loads          uint64        // loader calls that started in the window, every process
	Ideal          uint64        // the fewest loads that serve these calls, none past its TTL (Markdown says how)
	MaxAge         time.Duration // the oldest value served (at call start)
	OverTTL        uint64        // calls served a value older than the TTL
	StoreErrors    uint64        // store errors the systems swallowed (whole run)
}

// Throughput is calls per second over the window.
func (r RunResult) Throughput() float64 { return float64(r.Calls) / r.Window.Seconds() }

func (r RunResult) perCall(x float64) float64 {
	if r.Calls == 0 {
		return 0
	}
	return x / float64(r.Calls)
}

type coordinator struct {
	cfg  Config
	rdb  *redis.Client
	self string
	seq  int
}

func newCoordinator(cfg Config) (*coordinator, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return &coordinator{cfg: cfg, self: self, rdb: redis.NewClient(&redis.Options{Addr: cfg.Addr})}, nil
}

func (c *coordinator) close() { _ = c.rdb.Close() }

// run runs one system once: flush, start the workers, set their start
// time, read the server's counters at the window's edges, collect.
func (c *coordinator) run(ctx context.Context, system string, procs int, mode Mode, round int) (RunResult, error) {
	cfg := c.cfg
	c.seq++
	j := job{
		Addr: cfg.Addr, System: system, Procs: procs, Goroutines: cfg.Goroutines, Mode: mode, Rate: cfg.Rate,
		Keys: cfg.Keys, ZipfS: cfg.ZipfS, ValueSize: cfg.ValueSize, TTL: cfg.TTL, LoadLatency: cfg.LoadLatency,
		Warmup: cfg.Warmup, Duration: cfg.Duration, Namespace: "mixed" + strconv.Itoa(c.seq), Seed: rand.Uint64(),
		Round: round, CPUProfile: cfg.CPUProfile,
	}
	if err := c.rdb.FlushAll(ctx).Err(); err != nil {
		return RunResult{}, err
	}

	type done struct {
		res *workerResult
		err error
	}
	results := make(chan done, procs)
	var cmds []*exec.Cmd
	for p := range procs {
		pj := j
		pj.Proc = p
		enc, _ := json.Marshal(pj)
		cmd := exec.CommandContext(ctx, c.self)
		// Under -race a process sleeps 1s at exit to let late reports
		// land; a worker's goroutines are done by then, so skip it.
		race := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
		cmd.Env = append(os.Environ(), workerEnv+"="+string(enc), "GORACE="+race)
		cmd.Stderr = os.Stderr
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			return RunResult{}, err
		}
		cmds = append(cmds, cmd)
		go func() {
			err := cmd.Wait()
			if err != nil {
				results <- done{err: fmt.Errorf("worker %d: %w", p, err)}
				return
			}
			var res workerResult
			if err := gob.NewDecoder(&out).Decode(&res); err != nil {
				results <- done{err: fmt.Errorf("worker %d: %w", p, err)}
				return
			}
			results <- done{res: &res}
		}()
	}
	kill := sync.OnceFunc(func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Kill()
		}
	})
	defer kill() // a no-op once they have exited

	// Wait until every worker is connected and built, then give them all
	// the same start, a little ahead so each is parked on it.
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := c.rdb.Get(ctx, j.readyKey()).Int()
		if err == nil && n >= procs {
			break
		}
		if len(results) > 0 {
			d := <-results
			return RunResult{}, orErr(d.err, errNoResult)
		}
		if time.Now().After(deadline) {
			return RunResult{}, fmt.Errorf("%d of %d workers ready after a minute", n, procs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t0 := time.Now().Add(50 * time.Millisecond)
	starts := make([]any, procs)
	for i := range starts {
		starts[i] = strconv.FormatInt(t0.UnixNano(), 10)
	}
	if err := c.rdb.RPush(ctx, j.goKey(), starts...).Err(); err != nil {
		return RunResult{}, err
	}
	t1 := t0.Add(cfg.Warmup)
	t2 := t1.Add(cfg.Duration)
	time.Sleep(time.Until(t1))
	before, err := serverCounters(ctx, c.rdb)
	if err != nil {
		return RunResult{}, err
	}
	time.Sleep(time.Until(t2))
	after, err := serverCounters(ctx, c.rdb)
	if err != nil {
		return RunResult{}, err
	}

	r := RunResult{System: system, Procs: procs, Mode: mode, Round: round, Window: cfg.Duration}
	if mode == Paced {
		r.Offered = cfg.Rate * float64(procs*cfg.Goroutines)
	}
	r.RedisCmds = after.commands - before.commands - 1 // the INFO that read "before" (a command counts once it is done)
	r.RedisByCommand = map[string]uint64{}
	for name, n := range after.byCommand {
		if name == "info" {
			n--
		}
		if d := n - before.byCommand[name]; d > 0 {
			r.RedisByCommand[name] = d
		}
	}
	r.RedisBytes = after.netBytes - before.netBytes
	r.RedisCPU = after.cpu - before.cpu
	lat := newHist()
	var traces [][]uint64
	for range procs {
		d := <-results
		if d.err != nil {
			return RunResult{}, d.err
		}
		w := d.res
		r.Calls += w.Calls
		r.Errors += w.Errors
		r.Wrong += w.Wrong
		if r.FirstError == "" {
			r.FirstError = w.FirstError
		}
		lat.add(w.Latency)
		r.CPU += w.CPU
		r.RoundTrips += w.RoundTrips
		r.Loads += w.Loads
		r.MaxAge = max(r.MaxAge, w.MaxAge)
		r.OverTTL += w.OverTTL
		r.StoreErrors += w.StoreErrors
		traces = append(traces, w.Trace)
	}
	r.P50, r.P99 = lat.quantile(0.5), lat.quantile(0.99)
	ms := int64(time.Millisecond)
	window := int64(cfg.LoadLatency+cfg.TTL) / ms
	from := int64(cfg.Warmup) / ms
	r.Ideal = idealLoads(sortDedup(slices.Concat(traces...)), window, from, from+int64(cfg.Duration)/ms)
	return r, nil
}

func orErr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

type counters struct {
	commands, netBytes uint64
	cpu                time.Duration
	byCommand          map[string]uint64
}

// serverCounters reads the server's running totals from INFO.
func serverCounters(ctx context.Context, rdb *redis.Client) (counters, error) {
	info, err := rdb.Info(ctx, "stats", "cpu", "commandstats").Result()
	if err != nil {
		return counters{}, err
	}
	c := counters{byCommand: map[string]uint64{}}
	var cpuSecs float64
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "total_commands_processed":
			c.commands, err = strconv.ParseUint(v, 10, 64)
		case "total_net_input_bytes", "total_net_output_bytes":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 64)
			c.netBytes += n
		case "used_cpu_sys", "used_cpu_user":
			var f float64
			f, err = strconv.ParseFloat(v, 64)
			cpuSecs += f
		default:
			// cmdstat_get:calls=12,usec=34,...
			name, ok := strings.CutPrefix(k, "cmdstat_")
			calls, ok2 := strings.CutPrefix(v, "calls=")
			if ok && ok2 {
				calls, _, _ = strings.Cut(calls, ",")
				c.byCommand[name], err = strconv.ParseUint(calls, 10, 64)
			}
		}
		if err != nil {
			return counters{}, fmt.Errorf("INFO %s: %w", k, err)
		}
	}
	c.cpu = time.Duration(cpuSecs * float64(time.Second))
	return c, nil
}
