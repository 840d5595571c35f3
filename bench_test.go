package readthrough_test

import (
	"context"
	"encoding/json"
	"testing"

	rt "github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
)

// The hit path against its floor: the same memstore Get and JSON decode
// with no readthrough in between. bench/ compares against peers.

func BenchmarkHit(b *testing.B) {
	s := memstore.New()
	c, _ := rt.New[int, Product](s, &rt.Options[int, Product]{Namespace: "product"})
	ctx := context.Background()
	load := func(context.Context, int) (Product, error) { return Product{ID: 42, Name: "widget", Price: 999}, nil }
	if _, err := c.GetOrLoad(ctx, 42, load); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.GetOrLoad(ctx, 42, load); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHitFloor(b *testing.B) {
	s := memstore.New()
	ctx := context.Background()
	payload, _ := json.Marshal(Product{ID: 42, Name: "widget", Price: 999})
	_ = s.Set(ctx, "product:42", payload, 1<<62)
	b.ReportAllocs()
	for b.Loop() {
		raw, ok, err := s.Get(ctx, "product:42")
		if err != nil || !ok {
			b.Fatal("miss")
		}
		var p Product
		if err := json.Unmarshal(raw, &p); err != nil {
			b.Fatal(err)
		}
	}
}
