package mixed

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Report is every run of a benchmark, with the configuration it ran.
type Report struct {
	Config  Config
	Started time.Time
	Runs    []RunResult
	// Command is the command line the report names as reproducing it;
	// empty: go run ./bench/cmd/mixed.
	Command string
}

// Summary is one system in one setting (Procs, Mode): medians over the
// rounds, ratios against readthrough taken within each round first.
type Summary struct {
	System string
	Procs  int
	Mode   Mode

	Rounds          int
	Throughput      float64       // calls/s
	P50, P99        time.Duration // medians of each round's quantile
	CPUPerCall      time.Duration // the workers'
	TripsPerCall    float64       // round trips to Redis, counted by the clients
	CmdsPerCall     float64       // Redis commands, counted by the server
	BytesPerCall    float64       // Redis bytes in and out
	RedisCPUPerCall time.Duration
	Loads, Ideal    uint64        // medians
	LoadRatio       float64       // median of loads / ideal
	MaxAge          time.Duration // the oldest value served in any round
	OverTTL         float64       // share of all calls, all rounds, served a value older than the TTL
	Behind          bool          // paced: some round served under 97% of the offered load
	Errors          uint64        // failed calls, wrong values and swallowed store errors, all rounds
	FirstError      string
	// CmdsByName is CmdsPerCall by command: the median per call.
	CmdsByName map[string]float64

	// Against readthrough in the same round (medians; 0 when there is
	// no readthrough run to compare with).
	XThroughput, XP50, XP99, XCPU, XTrips, XCmds, XBytes float64
}

// Summaries returns one Summary per system and setting, in run order.
func (r *Report) Summaries() []Summary {
	type setting struct {
		procs int
		mode  Mode
	}
	var out []Summary
	var seen []setting
	for _, run := range r.Runs {
		s := setting{run.Procs, run.Mode}
		if slices.Contains(seen, s) {
			continue
		}
		seen = append(seen, s)
		for _, sys := range r.Config.Systems {
			out = append(out, r.summarise(sys, s.procs, s.mode))
		}
	}
	return out
}

func (r *Report) summarise(sys string, procs int, mode Mode) Summary {
	s := Summary{System: sys, Procs: procs, Mode: mode}
	var tput, p50, p99, cpu, trips, cmds, bytes, rcpu, loads, ideal, ratio []float64
	var xs [7][]float64
	var calls, over uint64
	byName := map[string][]float64{}
	for _, run := range r.Runs {
		if run.System != sys || run.Procs != procs || run.Mode != mode {
			continue
		}
		s.Rounds++
		tput = append(tput, run.Throughput())
		p50 = append(p50, float64(run.P50))
		p99 = append(p99, float64(run.P99))
		cpu = append(cpu, run.perCall(float64(run.CPU)))
		trips = append(trips, run.perCall(float64(run.RoundTrips)))
		cmds = append(cmds, run.perCall(float64(run.RedisCmds)))
		bytes = append(bytes, run.perCall(float64(run.RedisBytes)))
		rcpu = append(rcpu, run.perCall(float64(run.RedisCPU)))
		loads = append(loads, float64(run.Loads))
		ideal = append(ideal, float64(run.Ideal))
		ratio = append(ratio, float64(run.Loads)/math.Max(float64(run.Ideal), 1))
		for name, n := range run.RedisByCommand {
			byName[name] = append(byName[name], run.perCall(float64(n)))
		}
		s.MaxAge = max(s.MaxAge, run.MaxAge)
		calls += run.Calls
		over += run.OverTTL
		if run.Offered > 0 && run.Throughput() < 0.97*run.Offered {
			s.Behind = true
		}
		s.Errors += run.Errors + run.Wrong + run.StoreErrors
		if s.FirstError == "" {
			s.FirstError = run.FirstError
		}
		if rt, ok := r.find(Readthrough, procs, mode, run.Round); ok {
			for i, pair := range [7][2]float64{
				{run.Throughput(), rt.Throughput()},
				{float64(run.P50), float64(rt.P50)},
				{float64(run.P99), float64(rt.P99)},
				{run.perCall(float64(run.CPU)), rt.perCall(float64(rt.CPU))},
				{run.perCall(float64(run.RoundTrips)), rt.perCall(float64(rt.RoundTrips))},
				{run.perCall(float64(run.RedisCmds)), rt.perCall(float64(rt.RedisCmds))},
				{run.perCall(float64(run.RedisBytes)), rt.perCall(float64(rt.RedisBytes))},
			} {
				if pair[1] > 0 {
					xs[i] = append(xs[i], pair[0]/pair[1])
				}
			}
		}
	}
	if s.Rounds == 0 {
		return s
	}
	s.Throughput = median(tput)
	s.P50, s.P99 = time.Duration(median(p50)), time.Duration(median(p99))
	s.CPUPerCall = time.Duration(median(cpu))
	s.TripsPerCall, s.CmdsPerCall = median(trips), median(cmds)
	s.BytesPerCall, s.RedisCPUPerCall = median(bytes), time.Duration(median(rcpu))
	s.Loads, s.Ideal, s.LoadRatio = uint64(median(loads)), uint64(median(ideal)), median(ratio)
	if calls > 0 {
		s.OverTTL = float64(over) / float64(calls)
	}
	s.CmdsByName = map[string]float64{}
	for name, xs := range byName {
		xs = append(xs, make([]float64, s.Rounds-len(xs))...) // rounds without the command: 0
		s.CmdsByName[name] = median(xs)
	}
	s.XThroughput, s.XP50, s.XP99, s.XCPU, s.XTrips, s.XCmds, s.XBytes =
		median(xs[0]), median(xs[1]), median(xs[2]), median(xs[3]), median(xs[4]), median(xs[5]), median(xs[6])
	return s
}

func (r *Report) find(sys string, procs int, mode Mode, round int) (RunResult, bool) {
	for _, run := range r.Runs {
		if run.System == sys && run.Procs == procs && run.Mode == mode && run.Round == round {
			return run, true
		}
	}
	return RunResult{}, false
}

// median of xs; the mean of the middle two for an even count; 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// Markdown writes the report under its own heading: see [Report.Body].
func (r *Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "## Mixed workload: readthrough and its peers, real processes on one Redis\n\n")
	r.Body(w)
}

// Body writes the report without a heading, for a document that gives it
// one: the setup, a table per setting (### headings), then how to read it.
func (r *Report) Body(w io.Writer) {
	cfg := r.Config
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("Keys Zipf s = %g over %d keys, %d-byte JSON values, TTL %v, a %v loader; G = %d goroutines per process;\n",
		cfg.ZipfS, cfg.Keys, cfg.ValueSize, cfg.TTL, cfg.LoadLatency, cfg.Goroutines)
	p("each run is cold (Redis flushed, new processes), warms up for %v, then measures %v; medians of %d interleaved rounds.\n",
		cfg.Warmup, cfg.Duration, cfg.Rounds)
	p("%d cores, %s %s/%s, redis-server on loopback; `%s`, %s.\n\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, cmp.Or(r.Command, "go run ./bench/cmd/mixed"), r.Started.Format("2006-01-02"))

	sums := r.Summaries()
	for i := 0; i < len(sums); {
		first, start := sums[i], i
		p("### P = %d × G = %d, %s", first.Procs, cfg.Goroutines, first.Mode)
		if first.Mode == Paced {
			p(": %g calls/s per goroutine, %g calls/s offered", cfg.Rate, cfg.Rate*float64(first.Procs*cfg.Goroutines))
		}
		p("\n\n")
		p("| system | calls/s | p50 | p99 | CPU/call | round trips/call | Redis cmds/call | Redis bytes/call | Redis CPU/call | loads / ideal | max age | served > TTL |\n")
		p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for ; i < len(sums) && sums[i].Procs == first.Procs && sums[i].Mode == first.Mode; i++ {
			s := sums[i]
			name := s.System
			if s.Behind {
				name += " †"
			}
			if s.Errors > 0 {
				name += " ‡"
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f (%d / %d) | %s | %s |\n",
				name,
				x(si(s.Throughput), s.XThroughput, s.System),
				x(dur(s.P50), s.XP50, s.System),
				x(dur(s.P99), s.XP99, s.System),
				x(dur(s.CPUPerCall), s.XCPU, s.System),
				x(fmt.Sprintf("%.2f", s.TripsPerCall), s.XTrips, s.System),
				x(fmt.Sprintf("%.2f", s.CmdsPerCall), s.XCmds, s.System),
				x(si(s.BytesPerCall), s.XBytes, s.System),
				dur(s.RedisCPUPerCall),
				s.LoadRatio, s.Loads, s.Ideal,
				age(s.MaxAge),
				pct(s.OverTTL))
		}
		var breakdown []string
		for _, s := range sums[start:i] {
			breakdown = append(breakdown, cmdBreakdown(s))
		}
		p("\nRedis commands per call, by command: %s.\n\n", strings.Join(breakdown, "; "))
	}
	for _, s := range sums {
		if s.Errors > 0 {
			p("‡ %s, P = %d, %s: %d failed calls, wrong values or swallowed store errors (first: %s).\n", s.System, s.Procs, s.Mode, s.Errors, s.FirstError)
		}
	}
	p("%s\n", strings.TrimSpace(fmt.Sprintf(howToRead, cfg.TTL, cfg.LoadLatency)))
	p("\nThe systems:\n\n")
	for _, name := range cfg.Systems {
		ct, _ := contender(name)
		p("- **%s**: %s.\n", name, ct.Note)
	}
	p("\n")
}

const howToRead = `
How to read it. Each cell is the median over rounds, and (in parentheses) the median over rounds of the ratio to
readthrough in the same round. † marks a paced row that served under 97%% of the offered load: its latencies are
not at the same load as the others.

- **CPU/call**: user + system time of the worker processes (getrusage) over the window, divided by calls: the
  client's cost, goroutines, GC and all. Paced, it also carries each call's wake-up from sleep, the same for every
  system: compare it across systems there, and read the closed-loop figure as the cost of a call. **Round trips/call**: commands and pipelines the workers' clients sent
  (a go-redis hook). **Redis cmds, bytes, CPU per call**: deltas of the server's INFO (total_commands_processed, which
  also counts the commands a script runs, so readthrough's compare-and-swap counts its inner commands; net input + output bytes;
  used_cpu_user + used_cpu_sys) over the window, divided by calls; the line under each table splits the commands.
- **Ideal loads**: the fewest loads any fleet could make for the requests this system was sent without serving a value
  older than the TTL. Per key, across all processes, in time order (to the millisecond): a request that finds no live
  value starts a load, and that value serves every request for the next %[2]v + %[1]v (the load, then the TTL). This is
  readthrough's promise, one load per key per expiry across the fleet, kept by an oracle that coordinates for free.
  The walk starts cold at the start of the warm-up, as the systems do, and counts the loads that start in the window.
  The ideal follows the requests a system was sent, so in closed loop a faster system has a larger one (more keys of
  the tail are requested within a TTL). Below 1.00, a system made fewer loads than a fresh-serving fleet can: it
  served values past their TTL instead.
- **Max age**: the oldest value served in any round, as call start − the time the loader returned it; the freshest
  the value could have been when the system chose it. **Served > TTL**: the share of calls served a value older than %[1]v.
`

// x appends the ratio to readthrough, except on readthrough's own row:
// two decimals, or two significant digits below 0.1.
func x(cell string, ratio float64, system string) string {
	switch {
	case system == Readthrough || ratio == 0:
		return cell
	case ratio < 0.1:
		return fmt.Sprintf("%s (%.2g×)", cell, ratio)
	case ratio >= 10:
		return fmt.Sprintf("%s (%.1f×)", cell, ratio)
	}
	return fmt.Sprintf("%s (%.2f×)", cell, ratio)
}

// cmdBreakdown is "system: get 1.02, set 0.13", commands by share, those
// under 0.005 per call left out.
func cmdBreakdown(s Summary) string {
	names := slices.Collect(maps.Keys(s.CmdsByName))
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(s.CmdsByName[b], s.CmdsByName[a]), strings.Compare(a, b))
	})
	var parts []string
	for _, n := range names {
		if v := s.CmdsByName[n]; v >= 0.005 {
			parts = append(parts, fmt.Sprintf("%s %.2f", n, v))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	return s.System + ": " + strings.Join(parts, ", ")
}

// si writes n with three significant digits and a k or M suffix.
func si(n float64) string {
	switch {
	case n >= 1e6:
		return sig3(n/1e6) + "M"
	case n >= 1e3:
		return sig3(n/1e3) + "k"
	}
	return sig3(n)
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// dur writes a latency in µs or ms, three significant digits.
func dur(d time.Duration) string {
	if d >= time.Millisecond {
		return sig3(float64(d)/float64(time.Millisecond)) + " ms"
	}
	return sig3(float64(d)/float64(time.Microsecond)) + " µs"
}

// age writes a value's age in seconds, to the millisecond.
func age(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

func pct(f float64) string {
	switch {
	case f == 0:
		return "0"
	case f < 0.0001:
		return "< 0.01%"
	}
	return fmt.Sprintf("%.2f%%", 100*f)
}
