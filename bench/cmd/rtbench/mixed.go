package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/readthrough-go/readthrough/bench/mixed"
)

// --- 6. the mixed workload

func mixedWorkload(addr string) {
	cfg := mixed.Config{
		Addr:       addr,
		Procs:      []int{1, 4},
		Goroutines: 16,
		Rounds:     *mixedRounds,
		Duration:   *mixedDuration,
		Progress:   os.Stderr,
		CPUProfile: *mixedProfile,
	}
	rep, err := mixed.Run(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	rep.Command = fmt.Sprintf("go run ./bench/cmd/rtbench -only 6 -mixed-rounds %d -mixed-duration %v", *mixedRounds, *mixedDuration)
	fmt.Println("## 6. The mixed workload (`-only 6`)")
	fmt.Println()
	fmt.Println("Real worker processes share one redis-server, each calling one system for Zipf-distributed keys; package")
	fmt.Println("`bench/mixed` (also `go run ./bench/cmd/mixed`, which takes every knob).")
	fmt.Println()
	rep.Body(os.Stdout)
	mixedTargets(rep)
}

// mixedTargets checks the targets at P = 4 for readthrough with and
// without the near cache.
func mixedTargets(rep *mixed.Report) {
	find := func(sys string, mode mixed.Mode) (mixed.Summary, bool) {
		for _, s := range rep.Summaries() {
			if s.System == sys && s.Procs == 4 && s.Mode == mode {
				return s, true
			}
		}
		return mixed.Summary{}, false
	}
	fmt.Println("### Targets at P = 4")
	fmt.Println()
	fmt.Println("Throughput at least sturdyc's (closed loop); Redis round trips per call at most go-redis/cache-with-local's")
	fmt.Println("(closed loop and paced); no value ever older than its TTL; loads at the ideal (within 2%).")
	fmt.Println()
	fmt.Println("| system | calls/s ≥ sturdyc's | round trips/call ≤ go-redis/cache local's, closed / paced | max age ≤ TTL | loads / ideal, closed / paced |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	for _, sys := range []string{mixed.Readthrough, "readthrough+near"} {
		var cells []string
		c, ok1 := find(sys, mixed.Closed)
		p, ok2 := find(sys, mixed.Paced)
		sc, ok3 := find("sturdyc", mixed.Closed)
		gc, ok4 := find("go-redis/cache local", mixed.Closed)
		gp, ok5 := find("go-redis/cache local", mixed.Paced)
		if !(ok1 && ok2 && ok3 && ok4 && ok5) {
			fmt.Printf("| %s | not run | | | |\n", sys)
			continue
		}
		cells = append(cells, fmt.Sprintf("%.0f vs %.0f: %s", c.Throughput, sc.Throughput, met(c.Throughput >= sc.Throughput)))
		cells = append(cells, fmt.Sprintf("%.2f vs %.2f / %.2f vs %.2f: %s", c.TripsPerCall, gc.TripsPerCall, p.TripsPerCall, gp.TripsPerCall,
			met(c.TripsPerCall <= gc.TripsPerCall && p.TripsPerCall <= gp.TripsPerCall)))
		maxAge := max(c.MaxAge, p.MaxAge)
		cells = append(cells, fmt.Sprintf("%.3f s, %s past it: %s", maxAge.Seconds(), pctOf(max(c.OverTTL, p.OverTTL)),
			met(maxAge <= rep.Config.TTL)))
		cells = append(cells, fmt.Sprintf("%.2f / %.2f: %s", c.LoadRatio, p.LoadRatio,
			met(c.LoadRatio <= 1.02 && p.LoadRatio <= 1.02 && c.LoadRatio >= 0.98 && p.LoadRatio >= 0.98)))
		fmt.Printf("| %s | %s |\n", sys, strings.Join(cells, " | "))
	}
	fmt.Println()
	var over time.Duration
	for _, s := range rep.Summaries() {
		if strings.HasPrefix(s.System, mixed.Readthrough) {
			over = max(over, s.MaxAge-rep.Config.TTL)
		}
	}
	if over > 0 {
		fmt.Printf("Values readthrough served past the TTL were at most %v past it. A store or near hit checks the value's\n", over.Round(time.Millisecond))
		fmt.Println("fresh-until, which is when the loader returned plus the TTL (it reads its clock after the loader returns),")
		fmt.Println("at or after the call's start, when the harness measures the age from the stamp the loader put on the value")
		fmt.Println("just before returning it. So a value served d past the TTL was stamped more than d before its loading")
		fmt.Println("goroutine read the clock: that goroutine was descheduled in between, on this saturated machine.")
		fmt.Println()
	}
	fmt.Println("Per load, at P = 4: loads per call (loads ÷ calls), the time a caller spends waiting on loads per call in")
	fmt.Printf("closed loop (loads per call × the %v loader: the goroutine that waits calls nothing meanwhile), and Redis\n", rep.Config.LoadLatency)
	fmt.Println("round trips per load (round trips per call ÷ loads per call).")
	fmt.Println()
	fmt.Println("| system | mode | loads per call | waiting on loads per call | round trips per load | served > TTL |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: |")
	for _, mode := range []mixed.Mode{mixed.Closed, mixed.Paced} {
		for _, sys := range rep.Config.Systems {
			s, ok := find(sys, mode)
			if !ok || s.Throughput == 0 {
				continue
			}
			perCall := float64(s.Loads) / (s.Throughput * rep.Config.Duration.Seconds())
			wait := time.Duration(perCall * float64(rep.Config.LoadLatency))
			fmt.Printf("| %s | %s | %.4f | %s | %.1f | %s |\n", sys, mode, perCall, fmtDur(wait), s.TripsPerCall/perCall, pctOf(s.OverTTL))
		}
	}
	fmt.Println()
	fmt.Print(mixedProfileNotes)
}

func pctOf(f float64) string {
	if f == 0 {
		return "0"
	}
	return fmt.Sprintf("%.3f%%", 100*f)
}

// mixedProfileNotes is what CPU profiles of the workers showed; its first
// line names the command that takes them.
const mixedProfileNotes = `Where the time goes, from CPU profiles of the P = 4 closed-loop workers (` + "`go run ./cmd/mixed -procs 4 -modes closed\n" +
	"-rounds 1 -duration 4s -systems 'readthrough,readthrough+near,sturdyc,go-redis/cache local' -cpuprofile DIR`" + ` from bench/,
then ` + "`go tool pprof -top -cum DIR/readthrough_near-P4-*.pprof`" + `). The two cores are saturated, so every system's four
workers burn about the same CPU (3.9 to 4.7 s in 16 worker-seconds) and throughput is the inverse of CPU per call.
In readthrough+near's workers, near hits (most calls) take under 1% of the CPU (` + "`nearServe`" + `); the calls that
reach Redis take the rest: go-redis commands 42% (their read and write syscalls alone 25%), store reads after a
near miss (` + "`getOrSet`" + `) 28%, loads with their lease, compare-and-swap and waits 16%, the notification link's
invalidations 12% (the link's WAIT read, in which go-redis hands over the pushes, 10%; evicting copies 2.5%),
JSON decoding 9%. A copy dies with its value's freshness, so every key requested after its TTL costs each process
a store read (and a wait on the lease), where sturdyc and go-redis/cache's local copies live on past the TTL: the
rows above show them serving a large share of calls past it, with fewer loads per call as a result. At an equal
offered load (paced) the loads per call are the same for every system, and readthrough+near's round trips per load
are the lease's: a read that takes it, the compare-and-swap, and each other process's read of the lease and then of
the value.

`
