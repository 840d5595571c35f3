package main

import (
	"fmt"
	"log"

	"github.com/readthrough-go/readthrough/bench"
)

// --- 8. the Recorder

func recorders() {
	cases, closeAll, err := bench.RecorderCases()
	if err != nil {
		log.Fatal(err)
	}
	defer closeAll()
	ns, allocs := benchRounds(cases)
	fmt.Println("## 8. The Recorder (`-only 8`)")
	fmt.Println()
	fmt.Println("The hit path on memstore, near and store, with no `Options.Recorder`, with one that counts events with an")
	fmt.Println("atomic add, and with otelreadthrough on an SDK MeterProvider (a ManualReader, never collected: the cost of")
	fmt.Println("recording, the export aside). A near hit records one event (the hit); a store hit two (the store call")
	fmt.Println("and the hit). `go test -bench Recorder ./bench` gives the same cases for benchstat.")
	fmt.Println()
	fmt.Println("| hit | ns/op | allocs/op | added by the Recorder, ns |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	for i, c := range cases {
		base := i - i%3 // the no-Recorder case of the same hit
		added := "–"
		if i != base {
			d := make([]float64, len(ns[i]))
			for r := range d {
				d[r] = ns[i][r] - ns[base][r]
			}
			added = fmt.Sprintf("%+.0f", median(d))
		}
		fmt.Printf("| %s | %.0f | %d | %s |\n", c.Name, median(ns[i]), allocs[i], added)
	}
	fmt.Println()
	fmt.Println("A near hit stays on its one-clock-read fast path with a Recorder: what it adds is the Event and the call")
	fmt.Println("itself. A store hit with a Recorder goes through the generic store call, which times it (two clock reads) and")
	fmt.Println("allocates a closure: most of what it adds there is that path, not the Recorder's own work (`go test -bench")
	fmt.Println("'Recorder/store' -cpuprofile`).")
	fmt.Println()
}
