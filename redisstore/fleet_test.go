package redisstore_test

// Tests across real processes: the test binary re-executes itself as
// workers (see TestMain), each with its own client and Cache, all against
// one redis-server. Loaders count their calls in Redis, so the count spans
// every process.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const workerEnv = "READTHROUGH_WORKER"

func TestMain(m *testing.M) {
	if role := os.Getenv(workerEnv); role != "" {
		os.Exit(runWorker(role))
	}
	os.Exit(m.Run())
}

// workerReport is what a worker prints on its last line of stdout.
type workerReport struct {
	Sources map[string]int  `json:"sources"`
	Errors  []string        `json:"errors"`
	MaxCall time.Duration   `json:"max_call"` // the slowest GetOrLoad
	Lags    []time.Duration `json:"lags"`     // near-reader: from each write to seeing it
	Value   string          `json:"value"`    // slow-loader: what its load returned
}

func env(name string) string { return os.Getenv("RT_" + name) }

func envInt(name string) int {
	n, _ := strconv.Atoi(env(name))
	return n
}

func envDuration(name string) time.Duration {
	d, _ := time.ParseDuration(env(name))
	return d
}

func runWorker(role string) int {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: env("ADDR")})
	defer rdb.Close()
	cache, err := readthrough.New[string, string](redisstore.New(rdb), &readthrough.Options[string, string]{
		Namespace: env("RUN"),
		Lock:      readthrough.LockOptions{TTL: envDuration("LOCK_TTL"), MaxWait: envDuration("MAX_WAIT")},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// A value written back after its callers had it must land before the
	// process exits, as in a service that closes its cache on shutdown.
	defer cache.Close()
	rep := workerReport{Sources: map[string]int{}}
	var mu sync.Mutex
	call := func(key string, load readthrough.Loader[string, string]) {
		start := time.Now()
		r, err := cache.Fetch(ctx, key, load)
		elapsed := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		rep.MaxCall = max(rep.MaxCall, elapsed)
		if err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			return
		}
		if r.Value != "value of "+key {
			rep.Errors = append(rep.Errors, fmt.Sprintf("wrong value %q for %q", r.Value, key))
		}
		rep.Sources[r.Source.String()]++
	}
	loader := func(delay time.Duration) readthrough.Loader[string, string] {
		return func(ctx context.Context, key string) (string, error) {
			if err := rdb.Incr(ctx, env("RUN")+":loads:"+key).Err(); err != nil {
				return "", err
			}
			time.Sleep(delay)
			return "value of " + key, nil
		}
	}
	burst := func(key string, load readthrough.Loader[string, string]) {
		var wg sync.WaitGroup
		for range envInt("GOROUTINES") {
			wg.Go(func() { call(key, load) })
		}
		wg.Wait()
	}

	switch role {
	case "stampede":
		for i := range envInt("KEYS") {
			key := fmt.Sprintf("cold-%d", i)
			if err := redistest.Barrier(ctx, rdb, env("RUN")+":arrive:"+key, envInt("PROCS"), 30*time.Second); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			burst(key, loader(200*time.Millisecond))
		}
	case "holder":
		// Takes the lock and hangs in its load until the test kills it.
		burst("contended", loader(time.Hour))
	case "waiter":
		rdb.Incr(ctx, env("RUN")+":waiters")
		burst("contended", loader(200*time.Millisecond))
	case "near-reader":
		nearReader(ctx, rdb, &rep)
	case "slow-loader":
		slowLoader(ctx, rdb, cache, &rep)
	case "batch":
		batchWorker(ctx, rdb, &rep)
	default:
		fmt.Fprintln(os.Stderr, "unknown worker role", role)
		return 2
	}
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
	return 0
}

type worker struct {
	cmd *exec.Cmd
	out chan workerReport
}

func startWorker(t *testing.T, role string, vars map[string]string) *worker {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), workerEnv+"="+role)
	for k, v := range vars {
		cmd.Env = append(cmd.Env, "RT_"+k+"="+v)
	}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	w := &worker{cmd: cmd, out: make(chan workerReport, 1)}
	go func() {
		var last string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			last = sc.Text()
		}
		var rep workerReport
		if err := json.Unmarshal([]byte(last), &rep); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("no report (%v): %q", err, last))
		}
		w.out <- rep
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return w
}

func (w *worker) wait(t *testing.T) workerReport {
	t.Helper()
	rep := <-w.out
	require.NoError(t, w.cmd.Wait(), "worker exit")
	assert.Empty(t, rep.Errors, "worker errors")
	return rep
}

// TestStampedeAcrossProcesses: 8 processes × 32 goroutines on the same
// cold key, whose loader takes 200 ms. Exactly one load, for each of 20
// fresh keys in a row.
func TestStampedeAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test; -short skips it")
	}
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	const procs, goroutines, keys = 8, 32, 20
	run := fmt.Sprintf("stampede%d", time.Now().UnixNano())
	vars := map[string]string{
		"ADDR": srv.Addr, "RUN": run, "PROCS": strconv.Itoa(procs), "GOROUTINES": strconv.Itoa(goroutines),
		"KEYS": strconv.Itoa(keys), "LOCK_TTL": "5s", "MAX_WAIT": "5s",
	}
	workers := make([]*worker, procs)
	for i := range workers {
		workers[i] = startWorker(t, "stampede", vars)
	}
	total := map[string]int{}
	for _, w := range workers {
		for src, n := range w.wait(t).Sources {
			total[src] += n
		}
	}
	for i := range keys {
		key := fmt.Sprintf("cold-%d", i)
		n, err := rdb.Get(t.Context(), run+":loads:"+key).Int()
		require.NoError(t, err)
		assert.Equal(t, 1, n, "loads of %s across %d processes", key, procs)
	}
	assert.Equal(t, procs*goroutines*keys, total["loader"]+total["shared"]+total["lock-wait"]+total["cache"])
	assert.Equal(t, keys, total["loader"], "one caller per key ran the loader")
	t.Logf("%d keys × %d processes × %d goroutines: sources %v", keys, procs, goroutines, total)
}

// TestLockHolderKilled: the process holding the lock is killed with
// SIGKILL in the middle of its load. The others finish within
// Lock.MaxWait plus one poll step, with exactly one more load.
func TestLockHolderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test; -short skips it")
	}
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	run := fmt.Sprintf("killed%d", time.Now().UnixNano())
	const maxWait = 3 * time.Second
	vars := map[string]string{
		"ADDR": srv.Addr, "RUN": run, "GOROUTINES": "8",
		"LOCK_TTL": "1s", "MAX_WAIT": maxWait.String(),
	}
	loads := func() int {
		n, _ := rdb.Get(ctx, run+":loads:contended").Int()
		return n
	}
	holder := startWorker(t, "holder", vars)
	require.Eventually(t, func() bool { return loads() == 1 }, 10*time.Second, 5*time.Millisecond, "holder started its load")

	waiters := make([]*worker, 3)
	for i := range waiters {
		waiters[i] = startWorker(t, "waiter", vars)
	}
	require.Eventually(t, func() bool {
		n, _ := rdb.Get(ctx, run+":waiters").Int()
		return n == len(waiters)
	}, 10*time.Second, 5*time.Millisecond, "waiters started")
	require.NoError(t, holder.cmd.Process.Kill()) // SIGKILL: no release, no cleanup
	_ = holder.cmd.Wait()

	for _, w := range waiters {
		rep := w.wait(t)
		assert.LessOrEqual(t, rep.MaxCall, maxWait+readthrough.DefaultMaxPollInterval,
			"a waiter's slowest call; the lock's TTL (1s) frees the key well before MaxWait")
	}
	assert.Equal(t, 2, loads(), "exactly one more load after the holder died")
}
