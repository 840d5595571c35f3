package readthrough_test

import (
	"strconv"

	"context"
	"encoding/json"
	"github.com/maypok86/otter/v2"
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

// BenchmarkNearHit: a repeat hit answered from the near cache, against an
// otter v2 Get of the same decoded value, with the key derived the same way
// (namespace, colon, decimal int) and prebuilt.
func BenchmarkNearHit(b *testing.B) {
	ctx := context.Background()
	load := func(context.Context, int) (Product, error) { return Product{ID: 42, Name: "widget", Price: 999}, nil }
	b.Run("readthrough", func(b *testing.B) {
		c, _ := rt.New[int, Product](memstore.New(), &rt.Options[int, Product]{Namespace: "product", Near: rt.NearOptions{MaxEntries: 10_000}})
		_, _ = c.GetOrLoad(ctx, 42, load)
		if r, _ := c.Fetch(ctx, 42, load); r.Source != rt.SourceCache {
			b.Fatal(r.Source)
		}
		b.ReportAllocs()
		for b.Loop() {
			if r, err := c.Fetch(ctx, 42, load); err != nil || r.Source != rt.SourceNear {
				b.Fatal(r.Source, err)
			}
		}
	})
	oc := otter.Must(&otter.Options[string, Product]{MaximumSize: 10_000})
	oc.Set("product:42", Product{ID: 42})
	b.Run("otter-derived-key", func(b *testing.B) {
		b.ReportAllocs()
		id := 42
		for b.Loop() {
			if _, ok := oc.GetIfPresent("product:" + strconv.Itoa(id)); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("otter-prebuilt-key", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := oc.GetIfPresent("product:42"); !ok {
				b.Fatal("miss")
			}
		}
	})
}
