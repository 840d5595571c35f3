package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
)

// WarmNear loads key into c (a zero V, if it is not cached) and reads it
// until a call is a near hit: the first call loads, the next reads the
// store and keeps the near copy.
func WarmNear[V any](c *readthrough.Cache[int, V], key int) error {
	ctx := context.Background()
	for range 4 {
		r, err := c.Fetch(ctx, key, func(context.Context, int) (V, error) {
			var v V
			return v, nil
		})
		if err != nil {
			return err
		}
		if r.Source == readthrough.SourceNear {
			return nil
		}
	}
	return fmt.Errorf("bench: key %d is not served from the near cache", key)
}

// NearHitCases returns the near-hit micro-benchmark: a hot key answered by
// readthrough's near cache (an int key, memstore behind it) against otter
// v2's GetIfPresent on the same decoded value, keyed the way a cache in
// front of a shared store must key it (namespace + ":" + decimal id, built
// per call), keyed by a prebuilt string, and with per-entry expiry, which
// reads a clock as readthrough must to never serve a copy past its
// freshness. The clock read alone is the last row.
//
// The first case is readthrough; ratios are read against the others.
func NearHitCases() ([]Case, error) {
	ctx := context.Background()
	rt, err := readthrough.New[int, Product](memstore.New(), &readthrough.Options[int, Product]{
		Namespace: "product", TTL: time.Hour, Near: readthrough.NearOptions{MaxEntries: 10_000}})
	if err != nil {
		return nil, err
	}
	if err := WarmNear(rt, 42); err != nil {
		return nil, err
	}
	cases := []Case{{"readthrough-near", "readthrough GetOrLoad, near hit", "int key, memstore behind, Options.Near", func() error {
		_, err := rt.GetOrLoad(ctx, 42, missLoader)
		return err
	}}}

	plain := otter.Must(&otter.Options[string, Product]{MaximumSize: 10_000})
	plain.Set("product:42", Sample)
	expiring := otter.Must(&otter.Options[string, Product]{MaximumSize: 10_000,
		ExpiryCalculator: otter.ExpiryWriting[string, Product](time.Hour)})
	expiring.Set("product:42", Sample)
	id := 42
	get := func(c *otter.Cache[string, Product], key func() string) func() error {
		return func() error {
			if _, ok := c.GetIfPresent(key()); !ok {
				return errMiss
			}
			return nil
		}
	}
	derived := func() string { return "product:" + strconv.Itoa(id) }
	prebuilt := func() string { return "product:42" }
	start := time.Now()
	var sink time.Duration
	cases = append(cases,
		Case{"otter-derived", "otter GetIfPresent, derived key", `"product:" + strconv.Itoa(id) per call`, get(plain, derived)},
		Case{"otter-prebuilt", "otter GetIfPresent, prebuilt key", "the key string built once", get(plain, prebuilt)},
		Case{"otter-expiry-derived", "otter with ExpiryCalculator, derived key", "per-entry expiry: otter reads a clock", get(expiring, derived)},
		Case{"otter-expiry-prebuilt", "otter with ExpiryCalculator, prebuilt key", "", get(expiring, prebuilt)},
		Case{"clock", "time.Since alone", "the one clock read a near hit makes", func() error {
			sink += time.Since(start)
			return nil
		}},
	)
	return cases, nil
}
