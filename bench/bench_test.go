package bench

import (
	"context"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/store"
)

// BenchmarkMemHit: the in-memory hit path of readthrough, its floor and
// its peers, for benchstat.
func BenchmarkMemHit(b *testing.B) {
	cases, err := MemHitCases()
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range cases {
		b.Run(c.ID, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMemHitCasesHit: every contender is warmed up and hits, so the
// benchmarks measure hits, not loads.
func TestMemHitCasesHit(t *testing.T) {
	cases, err := MemHitCases()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		for range 3 {
			if err := c.Op(); err != nil {
				t.Errorf("%s: %v", c.Name, err)
			}
		}
	}
}

// BenchmarkNearHit: a hot-key near hit against otter (NearHitCases).
func BenchmarkNearHit(b *testing.B) {
	cases, err := NearHitCases()
	if err != nil {
		b.Fatal(err)
	}
	benchCases(b, cases)
}

// BenchmarkRecorder: the hit path, near and store, with each Recorder.
func BenchmarkRecorder(b *testing.B) {
	cases, closeAll, err := RecorderCases()
	if err != nil {
		b.Fatal(err)
	}
	defer closeAll()
	benchCases(b, cases)
}

// BenchmarkBatch: a batch of BatchSize keys, BatchCached of them cached,
// on memstore, per contender; it reports store round trips and loader
// calls per batch.
func BenchmarkBatch(b *testing.B) {
	cases, err := BatchCases(MemstoreBackend())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range cases {
		b.Run(c.ID, func(b *testing.B) {
			b.ReportAllocs()
			trips, loads := c.RoundTrips(), c.Loads()
			for b.Loop() {
				if err := c.Op(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(c.RoundTrips()-trips)/float64(b.N), "trips/op")
			b.ReportMetric(float64(c.Loads()-loads)/float64(b.N), "loads/op")
		})
	}
}

func benchCases(b *testing.B, cases []Case) {
	for _, c := range cases {
		b.Run(c.ID, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCaseSetsHit: every near and Recorder contender is warmed up and
// hits, and the counting Recorder sees each hit.
func TestCaseSetsHit(t *testing.T) {
	near, err := NearHitCases()
	if err != nil {
		t.Fatal(err)
	}
	rec, closeAll, err := RecorderCases()
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	for _, c := range append(near, rec...) {
		for range 3 {
			if err := c.Op(); err != nil {
				t.Errorf("%s: %v", c.Name, err)
			}
		}
	}
}

func TestCountingRecorder(t *testing.T) {
	r := &CountingRecorder{}
	r.Record(readthrough.Event{Kind: readthrough.EventHit})
	r.Record(readthrough.Event{Kind: readthrough.EventHit})
	r.Record(readthrough.Event{Kind: readthrough.EventStore})
	if got := r.Count(readthrough.EventHit); got != 2 {
		t.Errorf("hits: %d, want 2", got)
	}
	if got := r.Count(readthrough.EventMiss); got != 0 {
		t.Errorf("misses: %d, want 0", got)
	}
}

// TestBatchCases: each batch contender answers every key, and makes the
// store round trips and loader calls its design says, on memstore.
func TestBatchCases(t *testing.T) {
	cases, err := BatchCases(MemstoreBackend())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ trips, loads int }{
		"many":      {3, 1}, // batch read, batch of leases, batch of compare-and-swaps
		"many-near": {3, 1}, // the cached keys from the near cache, the rest as above
		"single":    {BatchCached + 3*(BatchSize-BatchCached), BatchSize - BatchCached},
		"sturdyc":   {0, 1},
	}
	for _, c := range cases {
		w, ok := want[c.ID]
		if !ok {
			t.Errorf("unexpected case %q", c.ID)
			continue
		}
		trips, loads := c.RoundTrips(), c.Loads()
		for range 2 {
			if err := c.Op(); err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
		}
		if got := c.RoundTrips() - trips; got != 2*w.trips {
			t.Errorf("%s: %d round trips in 2 calls, want %d", c.Name, got, 2*w.trips)
		}
		if got := c.Loads() - loads; got != 2*w.loads {
			t.Errorf("%s: %d loader calls in 2 calls, want %d", c.Name, got, 2*w.loads)
		}
	}
}

// TestMomentoRPCs: a batch's Gets are one GetBatch, its Sets one SetBatch
// per TTL, every other operation its own RPC; single calls one each.
func TestMomentoRPCs(t *testing.T) {
	ctx := context.Background()
	s := NewCountedMemstore()
	_, _, _ = s.Get(ctx, "a")
	ops := []store.Op{{Kind: store.OpGet, Key: "a"}, {Kind: store.OpGet, Key: "b"},
		{Kind: store.OpSet, Key: "c", Value: []byte("v"), TTL: time.Second},
		{Kind: store.OpSet, Key: "d", Value: []byte("v"), TTL: time.Second},
		{Kind: store.OpSet, Key: "e", Value: []byte("v"), TTL: time.Minute},
		{Kind: store.OpSetIfAbsent, Key: "f", Value: []byte("v"), TTL: time.Second},
		{Kind: store.OpSetIfAbsent, Key: "g", Value: []byte("v"), TTL: time.Second}}
	if err := s.Batch(ctx, ops); err != nil {
		t.Fatal(err)
	}
	rpcs, waves := s.MomentoRPCs()
	if rpcs != 1+1+2+2 || waves != 2 {
		t.Errorf("MomentoRPCs = %d, %d; want 6 RPCs in 2 waves", rpcs, waves)
	}
	calls, batches := s.Calls()
	if calls["Get"] != 1 || calls["Batch"] != 1 || len(batches) != 1 || batches[0].Ops["Set"] != 3 || batches[0].SetTTLs != 2 {
		t.Errorf("Calls = %v, %+v", calls, batches)
	}
}
