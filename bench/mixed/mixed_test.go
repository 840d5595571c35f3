package mixed

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain lets Run re-run this test binary as its workers.
func TestMain(m *testing.M) {
	MaybeWorker()
	m.Run()
}

// TestShortRound runs every built system once in each mode, in one worker
// process of two goroutines, and checks that each report is sane.
func TestShortRound(t *testing.T) {
	srv := redistest.Start(t)
	cfg := Config{
		Addr:       srv.Addr,
		Procs:      []int{1},
		Goroutines: 2,
		Rounds:     1,
		TTL:        time.Second, // go-redis/cache's least
		Warmup:     50 * time.Millisecond,
		Duration:   250 * time.Millisecond,
		Keys:       1000,
		ValueSize:  512,
		Rate:       200,
	}
	var progress bytes.Buffer
	cfg.Progress = &progress
	rep, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	t.Log("\n" + progress.String())

	built := 0
	for _, c := range Contenders() {
		if c.New != nil {
			built++
		}
	}
	require.Len(t, rep.Runs, 2*built, "one run per system and mode")
	for _, r := range rep.Runs {
		t.Run(r.System+"/"+r.Mode.String(), func(t *testing.T) {
			assert.Positive(t, r.Calls, "calls served")
			assert.Zero(t, r.Errors, "failed calls; first: %s", r.FirstError)
			assert.Zero(t, r.Wrong, "values served for another key")
			assert.Positive(t, r.Loads, "loads")
			assert.Positive(t, r.Ideal, "ideal loads")
			// Shorter than the TTL, a run never reloads, and one process
			// loads each key once: what the ideal counts, give or take a
			// request and its load falling either side of the window's start.
			assert.InDelta(t, r.Ideal, r.Loads, 2+float64(r.Ideal)/10, "loads against the ideal")
			assert.Positive(t, r.MaxAge, "ages recorded")
			assert.Less(t, r.MaxAge, cfg.Warmup+cfg.Duration, "no value is older than the run")
			assert.Zero(t, r.OverTTL, "over TTL in a run shorter than it")
			assert.Positive(t, r.P50)
			assert.LessOrEqual(t, r.P50, r.P99)
			assert.Positive(t, r.CPU, "worker CPU time")
			assert.Positive(t, r.RoundTrips, "round trips counted by the clients")
			assert.Positive(t, r.RedisCmds, "Redis commands")
			assert.Positive(t, r.RedisBytes, "Redis traffic")
			if r.Mode == Paced {
				// Catching up after falling behind, a goroutine still never
				// calls more often than its schedule since the start.
				most := float64(cfg.Goroutines) * (cfg.Rate*(cfg.Warmup+cfg.Duration).Seconds() + 1)
				assert.LessOrEqual(t, float64(r.Calls), most, "paced calls")
			}
		})
	}

	var md bytes.Buffer
	rep.Markdown(&md)
	for _, r := range rep.Runs {
		assert.Contains(t, md.String(), "| "+r.System+" |", "a row per system")
	}
	t.Log("\n" + md.String())
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no address", Config{}, "Addr is required"},
		{"unknown system", Config{Addr: "x", Systems: []string{"memcached"}}, `unknown system "memcached"`},
		{"zipf", Config{Addr: "x", ZipfS: 0.9}, "ZipfS must be above 1"},
		{"procs", Config{Addr: "x", Procs: []int{0}}, "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	cfg, err := Config{Addr: "x"}.withDefaults()
	require.NoError(t, err)
	assert.Contains(t, cfg.Systems, Readthrough)

	assert.Contains(t, cfg.Systems, "readthrough+near", "every built system runs by default")
}

func TestHistBuckets(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		v := r.Uint64N(1 << 40)
		i := histIndex(v)
		require.LessOrEqual(t, histLow(i), v, "bucket %d's low end is above %d", i, v)
		require.Less(t, v, histLow(i+1), "bucket %d's high end is at or below %d", i, v)
		// 64 buckets per power of two: a bucket spans at most 1/64 of its values.
		require.LessOrEqual(t, float64(histLow(i+1)-histLow(i)), float64(max(histLow(i), 64))/64)
	}
}

func TestHistQuantile(t *testing.T) {
	h := newHist()
	assert.Zero(t, h.quantile(0.5), "empty")
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	assert.InEpsilon(t, 500*time.Microsecond, h.quantile(0.5), 1.0/64)
	assert.InEpsilon(t, 990*time.Microsecond, h.quantile(0.99), 1.0/64)
	assert.InEpsilon(t, time.Microsecond, h.quantile(0), 1.0/64)

	o := newHist()
	o.record(time.Hour) // above the top bucket: counted there
	h.add(o)
	assert.EqualValues(t, 1001, h.count())
	assert.Greater(t, h.quantile(1), 10*time.Minute)
}

func TestIdealLoads(t *testing.T) {
	pair := func(key, ms uint64) uint64 { return key<<32 | ms }
	pairs := []uint64{
		// key 0: loads at 0 (serving up to 2009), 2010 (to 4019), 5000.
		pair(0, 0), pair(0, 5), pair(0, 100), pair(0, 2009), pair(0, 2010), pair(0, 2015), pair(0, 4019), pair(0, 5000),
		// key 1: one load at 3000.
		pair(1, 3000), pair(1, 3001),
	}
	assert.EqualValues(t, 4, idealLoads(pairs, 2010, 0, 10000))
	assert.EqualValues(t, 3, idealLoads(pairs, 2010, 2000, 10000), "the load at 0 is before the window")
	assert.EqualValues(t, 2, idealLoads(pairs, 2010, 2000, 5000), "the load at 5000 is after it")
	assert.EqualValues(t, 10, idealLoads(pairs, 1, 0, 10000), "a 1 ms window loads every distinct millisecond")
}

// TestTraceNeverMisses has goroutines note pairs out of time order, as
// racing callers do: every pair noted must come out, once.
func TestTraceNeverMisses(t *testing.T) {
	const keys, goroutines = 4, 8
	tr := newTrace(keys)
	bufs := make([][]uint64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 0))
			for i := range 5000 {
				key := r.IntN(keys)
				ms := int64(i/10) + r.Int64N(3) - 1 // mostly rising, sometimes back
				bufs[g] = tr.note(bufs[g], key, max(ms, 0))
			}
		})
	}
	wg.Wait()

	// Replay the same draws to know every pair that was noted.
	want := map[uint64]bool{}
	for g := range goroutines {
		r := rand.New(rand.NewPCG(uint64(g), 0))
		for i := range 5000 {
			key := r.IntN(keys)
			ms := max(int64(i/10)+r.Int64N(3)-1, 0)
			want[uint64(key)<<32|uint64(ms)] = true
		}
	}
	got := sortDedup(slices.Concat(bufs...))
	assert.Len(t, got, len(want))
	for _, p := range got {
		assert.True(t, want[p], "pair %x was never noted", p)
	}
}

func TestSummaryRatios(t *testing.T) {
	run := func(sys string, round int, calls uint64, p50 time.Duration, loads, ideal uint64, age time.Duration, over uint64) RunResult {
		return RunResult{System: sys, Procs: 4, Mode: Closed, Round: round, Window: time.Second, Calls: calls,
			P50: p50, P99: 2 * p50, CPU: time.Duration(calls) * time.Microsecond, RedisCmds: 3000,
			Loads: loads, Ideal: ideal, MaxAge: age, OverTTL: over}
	}
	rep := &Report{Config: Config{Systems: []string{Readthrough, "sturdyc"}, TTL: 2 * time.Second, Goroutines: 16}}
	for round, calls := range []uint64{1000, 3000, 2000} {
		rep.Runs = append(rep.Runs,
			run(Readthrough, round, calls, 100*time.Microsecond, 100, 100, 2*time.Second, 0),
			// A round where the other system is 7× readthrough's throughput
			// in that round, whatever the round's own speed.
			run("sturdyc", round, 7*calls, 5*time.Microsecond, 80, 100, time.Duration(3+round)*time.Second, calls))
	}
	sums := rep.Summaries()
	require.Len(t, sums, 2)
	rt, sc := sums[0], sums[1]
	assert.Equal(t, 2000.0, rt.Throughput, "median over rounds")
	assert.InDelta(t, 7, sc.XThroughput, 1e-9, "ratio within each round, then the median")
	assert.InDelta(t, 0.05, sc.XP50, 1e-9)
	assert.InDelta(t, 1.0/7, sc.XCmds, 1e-9, "the same commands per round, spread over 7× the calls")
	assert.InDelta(t, 0.8, sc.LoadRatio, 1e-9)
	assert.Equal(t, 5*time.Second, sc.MaxAge, "the oldest of any round")
	assert.InDelta(t, 1.0/7, sc.OverTTL, 1e-9, "a share of all calls")

	var md bytes.Buffer
	rep.Markdown(&md)
	assert.Contains(t, md.String(), "| sturdyc | 14.0k (7.00×) |")
	assert.True(t, strings.Contains(md.String(), "| readthrough | 2.00k |"), md.String())
}
