package main

import (
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/memstore"
)

// startDemo serves the catalog and the service on loopback until t ends.
func startDemo(t *testing.T, latency time.Duration, failSafe bool) (*catalog, string) {
	t.Helper()
	catalog := newCatalog(latency)
	catalogURL, stop, err := serve("127.0.0.1:0", catalog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	svc, err := newService(memstore.New(), catalogURL, failSafe)
	if err != nil {
		t.Fatal(err)
	}
	svcURL, stopSvc, err := serve("127.0.0.1:0", svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopSvc)
	return catalog, svcURL
}

func TestBurstsCostOneUpstreamCallEach(t *testing.T) {
	catalog, svcURL := startDemo(t, 20*time.Millisecond, false)

	// A cold burst's requests that arrive after its one load has finished
	// are hits, and that depends on the scheduler, so a cold burst is
	// checked by its upstream calls and a warm one by its hits.
	for _, tc := range []struct {
		id, status, upstream int
		warm                 bool
	}{
		{7, 200, 1, false},    // cold: one load for the whole burst
		{7, 200, 0, true},     // warm: all hits
		{4040, 404, 1, false}, // missing: the 404 is relayed and cached
		{4040, 404, 0, true},  // and served from the cache
	} {
		before := catalog.calls.Load()
		r := burst(svcURL, tc.id, 20)
		if r.codes[tc.status] != 20 {
			t.Errorf("id %d: statuses %s, want 20 × %d", tc.id, r.statuses(), tc.status)
		}
		if got := catalog.calls.Load() - before; got != int64(tc.upstream) {
			t.Errorf("id %d: %d upstream calls, want %d", tc.id, got, tc.upstream)
		}
		switch {
		case tc.warm && r.hits != 20:
			t.Errorf("id %d, warm: %d x-cache hits, want 20", tc.id, r.hits)
		case !tc.warm && r.misses == 0:
			t.Errorf("id %d, cold: no x-cache miss, want at least the loading request's", tc.id)
		}
	}
}

func TestOutageIsServedFromStaleEntries(t *testing.T) {
	catalog, svcURL := startDemo(t, 10*time.Millisecond, true)

	if r := burst(svcURL, 7, 10); r.codes[200] != 10 {
		t.Fatalf("warm-up: %s", r.statuses())
	}
	time.Sleep(outageTTL + 100*time.Millisecond)
	catalog.down.Store(true)
	before := catalog.calls.Load()
	r := burst(svcURL, 7, 20)
	if r.codes[200] != 20 || r.stale != 20 {
		t.Errorf("upstream down, cached id: statuses %s, %d stale; want 20 × 200, all stale", r.statuses(), r.stale)
	}
	if got := catalog.calls.Load() - before; got != 1 {
		t.Errorf("%d upstream calls while down, want 1 (then throttled)", got)
	}
	if r := burst(svcURL, 8, 5); r.codes[502] != 5 {
		t.Errorf("upstream down, never cached: statuses %s, want 5 × 502", r.statuses())
	}
}
