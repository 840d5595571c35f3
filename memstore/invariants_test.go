package memstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/readthrough-go/readthrough/store"
)

// check fails t unless s's index, expiry heap, recency list and byte count
// agree with each other.
func check(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byExp) != len(s.items) {
		t.Fatalf("heap holds %d entries, map %d", len(s.byExp), len(s.items))
	}
	size := 0
	for i, it := range s.byExp {
		if it.idx != i {
			t.Fatalf("entry %q at heap position %d says %d", it.key, i, it.idx)
		}
		if s.items[it.key] != it {
			t.Fatalf("heap entry %q is not the map's", it.key)
		}
		if p := (i - 1) / 2; i > 0 && it.expires.Before(s.byExp[p].expires) {
			t.Fatalf("heap order broken at %d", i)
		}
		size += len(it.key) + len(it.value)
	}
	if size != s.size {
		t.Fatalf("size is %d, entries add up to %d", s.size, size)
	}
	if !s.bounded() {
		return
	}
	n := 0
	for it := s.lru.next; it != &s.lru; it = it.next {
		if it.next.prev != it || s.items[it.key] != it {
			t.Fatalf("recency list broken at %q", it.key)
		}
		n++
	}
	if n != len(s.items) {
		t.Fatalf("recency list holds %d entries, map %d", n, len(s.items))
	}
	if s.maxEntries > 0 && n > s.maxEntries || s.maxBytes > 0 && s.size > s.maxBytes {
		t.Fatalf("%d entries, %d bytes: over the bounds", n, s.size)
	}
}

// TestInvariantsUnderRandomOperations drives stores with random calls and
// TTLs through a bubble's clock, checking their structures after each.
func TestInvariantsUnderRandomOperations(t *testing.T) {
	for _, opts := range [][]Option{
		nil,
		{WithMaxEntries(50)},
		{WithMaxBytes(2000)},
		{WithMaxEntries(40), WithMaxBytes(1500)},
	} {
		synctest.Test(t, func(t *testing.T) {
			s := New(opts...)
			ctx := context.Background()
			r := rand.New(rand.NewPCG(1, uint64(len(opts))))
			value := func() []byte { return make([]byte, r.IntN(60)) }
			ttl := func() time.Duration { return time.Duration(1+r.IntN(5000)) * time.Millisecond }
			for range 5000 {
				k := fmt.Sprint("k", r.IntN(300))
				switch r.IntN(9) {
				case 0:
					_ = s.Set(ctx, k, value(), ttl())
				case 1:
					_, _ = s.SetIfAbsent(ctx, k, value(), ttl())
				case 2:
					v, _, _ := s.Get(ctx, k)
					_, _ = s.CompareAndSwap(ctx, k, v, value(), ttl())
				case 3:
					_ = s.Delete(ctx, k)
				case 4:
					v, _, _ := s.Get(ctx, k)
					_, _ = s.CompareAndDelete(ctx, k, v)
				case 5:
					_ = s.Batch(ctx, []store.Op{
						{Kind: store.OpSet, Key: k, Value: value(), TTL: ttl()},
						{Kind: store.OpGet, Key: fmt.Sprint("k", r.IntN(300))},
					})
				case 6:
					time.Sleep(time.Duration(r.IntN(200)) * time.Millisecond)
				default:
					_, _, _ = s.Get(ctx, k)
				}
				check(t, s)
			}
		})
	}
}
