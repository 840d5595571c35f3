package redisstore_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/redisstore"
	"github.com/readthrough-go/readthrough/redisstore/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkGet measures a hit on a real redis-server, in the two ways the
// store bounds a call by its context: inline, on a client with
// ContextTimeoutEnabled, and on a goroutine of its own, on a client built
// with go-redis's defaults. The package doc quotes the numbers.
func BenchmarkGet(b *testing.B) {
	srv := redistest.Start(b)
	for _, bc := range []struct {
		name string
		cte  bool
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"ContextTimeout", true, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Hour)
		}},
		{"Default", false, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Hour)
		}},
		{"DefaultNoDeadline", false, func() (context.Context, context.CancelFunc) {
			return context.Background(), func() {}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: bc.cte})
			b.Cleanup(func() { _ = rdb.Close() })
			s := redisstore.New(rdb)
			ctx, cancel := bc.ctx()
			defer cancel()
			if err := s.Set(ctx, "k", bytes.Repeat([]byte("v"), 100), time.Hour); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, ok, err := s.Get(ctx, "k"); err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
