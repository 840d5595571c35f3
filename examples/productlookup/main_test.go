package main

import (
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/memstore"
)

func TestBurstsCostOneUpstreamCallEach(t *testing.T) {
	catalog := newCatalog(20 * time.Millisecond)
	catalogURL, stop, err := serve("127.0.0.1:0", catalog)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	svc, err := newService(memstore.New(), catalogURL)
	if err != nil {
		t.Fatal(err)
	}
	svcURL, stopSvc, err := serve("127.0.0.1:0", svc)
	if err != nil {
		t.Fatal(err)
	}
	defer stopSvc()

	for _, tc := range []struct {
		id, status, upstream, hits int
	}{
		{7, 200, 1, 0},     // cold: one load for the whole burst
		{7, 200, 0, 20},    // warm: all hits
		{4040, 404, 1, 0},  // missing: the 404 is relayed and cached
		{4040, 404, 0, 20}, // and served from the cache
	} {
		before := catalog.calls.Load()
		r := burst(svcURL, tc.id, 20)
		if r.codes[tc.status] != 20 {
			t.Errorf("id %d: statuses %s, want 20 × %d", tc.id, r.statuses(), tc.status)
		}
		if got := catalog.calls.Load() - before; got != int64(tc.upstream) {
			t.Errorf("id %d: %d upstream calls, want %d", tc.id, got, tc.upstream)
		}
		if r.hits != tc.hits {
			t.Errorf("id %d: %d x-cache hits, want %d", tc.id, r.hits, tc.hits)
		}
	}
}
