package otelreadthrough_test

import (
	"context"
	"testing"

	rt "github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/otelreadthrough"
	"go.opentelemetry.io/otel/metric/noop"
)

// recorders are what the benchmarks compare: no Recorder at all, this
// one on a noop MeterProvider (the cost of the calls alone), and this one
// on the SDK (what a service pays, the export aside).
var recorders = []struct {
	name string
	make func(testing.TB) rt.Recorder // nil: no Recorder
}{
	{"none", nil},
	{"noop", func(b testing.TB) rt.Recorder {
		rec, err := otelreadthrough.New(otelreadthrough.WithMeterProvider(noop.NewMeterProvider()))
		if err != nil {
			b.Fatal(err)
		}
		return rec
	}},
	{"sdk", func(b testing.TB) rt.Recorder { return newMeter(b).rec }},
}

// hitCache is a Cache on memstore whose key "k" is cached: with near on,
// a call is a near hit; with it off, a store hit.
func hitCache(b *testing.B, near bool, rec rt.Recorder) *rt.Cache[string, string] {
	opts := &rt.Options[string, string]{Namespace: "bench"}
	if near {
		opts.Near = rt.NearOptions{MaxEntries: 1000}
	}
	if rec != nil {
		opts.Recorder = rec
	}
	c, err := rt.New(memstore.New(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	want := rt.SourceCache
	if near {
		want = rt.SourceNear
	}
	for range 3 { // load, store hit (makes the near copy), hit
		r, err := c.Fetch(context.Background(), "k", echo)
		if err != nil {
			b.Fatal(err)
		}
		if r.Source == want {
			return c
		}
	}
	b.Fatalf("the key is not served from %v", want)
	return nil
}

// BenchmarkHit is the hit path of a Cache, near and store, with each
// recorder.
func BenchmarkHit(b *testing.B) {
	ctx := context.Background()
	for _, near := range []struct {
		name string
		on   bool
	}{{"near", true}, {"store", false}} {
		for _, r := range recorders {
			b.Run(near.name+"/"+r.name, func(b *testing.B) {
				var rec rt.Recorder
				if r.make != nil {
					rec = r.make(b)
				}
				c := hitCache(b, near.on, rec)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.GetOrLoad(ctx, "k", echo); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkHitParallel is BenchmarkHit's near hit from every P at once:
// the contention an instrument adds.
func BenchmarkHitParallel(b *testing.B) {
	ctx := context.Background()
	for _, r := range recorders {
		b.Run("near/"+r.name, func(b *testing.B) {
			var rec rt.Recorder
			if r.make != nil {
				rec = r.make(b)
			}
			c := hitCache(b, true, rec)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.GetOrLoad(ctx, "k", echo); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRecord is Record alone, for a hit and for a store call.
func BenchmarkRecord(b *testing.B) {
	events := []struct {
		name string
		e    rt.Event
	}{
		{"hit", rt.Event{Kind: rt.EventHit, Namespace: "bench", Key: "bench:k", Source: rt.SourceNear}},
		{"store", rt.Event{Kind: rt.EventStore, Namespace: "bench", Key: "bench:k", Op: "get", Duration: 300}},
	}
	for _, r := range recorders[1:] {
		for _, ev := range events {
			b.Run(r.name+"/"+ev.name, func(b *testing.B) {
				rec := r.make(b)
				b.ReportAllocs()
				for b.Loop() {
					rec.Record(ev.e)
				}
			})
		}
	}
}
