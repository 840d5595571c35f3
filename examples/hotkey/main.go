// Command hotkey simulates a hot key under steady concurrent load, with a
// 200 ms loader, across several expiries, and prints what callers paid
// with each resilience feature off and on.
//
//	go run ./examples/hotkey
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
)

func main() {
	var (
		ttl      = flag.Duration("ttl", 2*time.Second, "TTL of the hot key")
		latency  = flag.Duration("latency", 200*time.Millisecond, "loader latency")
		run      = flag.Duration("run", 6*time.Second, "how long each mode runs")
		callers  = flag.Int("callers", 32, "concurrent callers")
		interval = flag.Duration("interval", 5*time.Millisecond, "pause between one caller's calls")
	)
	flag.Parse()

	modes := []struct {
		name string
		opts readthrough.Options[string, string]
	}{
		{"plain (TTL only)", readthrough.Options[string, string]{}},
		{"stale-while-revalidate", readthrough.Options[string, string]{StaleWhileRevalidate: time.Minute}},
		{"early refresh (β=1)", readthrough.Options[string, string]{EarlyRefresh: 1}},
		{"both", readthrough.Options[string, string]{StaleWhileRevalidate: time.Minute, EarlyRefresh: 1}},
	}
	fmt.Printf("hot key: %d callers, one call each per %v, loader %v, TTL %v, %v per mode (%d expiries)\n\n",
		*callers, *interval, *latency, *ttl, *run, int(*run / *ttl))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tcalls\tloads\tcallers that waited on a load\tworst latency\t")
	for _, m := range modes {
		o := m.opts
		o.TTL = *ttl
		r := simulate(&o, *latency, *run, *callers, *interval)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%v\t\n", m.name, r.calls, r.loads, r.waited, r.worst.Round(time.Millisecond))
	}
	tw.Flush()
}

type result struct {
	calls, loads, waited int64
	worst                time.Duration
}

func simulate(opts *readthrough.Options[string, string], latency, run time.Duration, callers int, interval time.Duration) result {
	c, err := readthrough.New(memstore.New(), opts)
	if err != nil {
		panic(err)
	}
	var loads atomic.Int64
	load := func(ctx context.Context, k string) (string, error) {
		loads.Add(1)
		time.Sleep(latency)
		return "hot value", nil
	}
	ctx := context.Background()
	_, _ = c.GetOrLoad(ctx, "hot", load) // warm
	loads.Store(0)

	var res result
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := time.Now().Add(run)
	for range callers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				start := time.Now()
				r, err := c.Fetch(ctx, "hot", load)
				d := time.Since(start)
				mu.Lock()
				res.calls++
				res.worst = max(res.worst, d)
				if err == nil && (r.Source == readthrough.SourceLoader || r.Source == readthrough.SourceShared || r.Source == readthrough.SourceLockWait) {
					res.waited++
				}
				mu.Unlock()
				time.Sleep(interval)
			}
		})
	}
	wg.Wait()
	_ = c.Close()
	res.loads = loads.Load()
	return res
}
