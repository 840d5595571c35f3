package memstore_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/memstore"
)

// benchKeys fills s with n keys of a 100-byte value, as a cache's entries.
func benchKeys(b *testing.B, s *memstore.Store, n int) []string {
	b.Helper()
	keys := make([]string, n)
	v := make([]byte, 100)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
		if err := s.Set(context.Background(), keys[i], v, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	return keys
}

// BenchmarkGet is the hit path the cache takes on every read.
func BenchmarkGet(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []memstore.Option
	}{
		{"unbounded", nil},
		{"bounded", []memstore.Option{memstore.WithMaxEntries(1 << 20)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := memstore.New(tc.opts...)
			keys := benchKeys(b, s, 1024)
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok, _ := s.Get(ctx, keys[i&1023]); !ok {
					b.Fatal("miss")
				}
				i++
			}
		})
	}
}

// BenchmarkGetParallel is the hit path under contention from every core.
func BenchmarkGetParallel(b *testing.B) {
	s := memstore.New()
	keys := benchKeys(b, s, 1024)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok, _ := s.Get(ctx, keys[i&1023]); !ok {
				b.Error("miss")
				return
			}
			i++
		}
	})
}

// BenchmarkSet is a write of a fresh entry over an existing one.
func BenchmarkSet(b *testing.B) {
	s := memstore.New()
	keys := benchKeys(b, s, 1024)
	ctx := context.Background()
	v := make([]byte, 100)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Set(ctx, keys[i&1023], v, time.Hour); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
