package readthrough

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"
)

// nullStore holds nothing; enough to build a Cache inside the package.
type nullStore struct{}

func (nullStore) Get(context.Context, string) ([]byte, bool, error)        { return nil, false, nil }
func (nullStore) Set(context.Context, string, []byte, time.Duration) error { return nil }
func (nullStore) SetIfAbsent(context.Context, string, []byte, time.Duration) (bool, error) {
	return true, nil
}
func (nullStore) Delete(context.Context, string) error { return nil }

// TestEarlyRefreshProbabilityFollowsXFetch samples the refresh decision
// with a seeded source at several distances from expiry: the share that
// refreshes must match XFetch's P = exp(−gap / (Δ·β)).
func TestEarlyRefreshProbabilityFollowsXFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, beta := range []float64{0.5, 1, 2} {
			c, err := New[string, string](nullStore{}, &Options[string, string]{EarlyRefresh: beta})
			if err != nil {
				t.Fatal(err)
			}
			c.rand = rand.New(rand.NewPCG(1, uint64(beta*10))).Float64
			delta := time.Second
			for _, gap := range []time.Duration{0, 250 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second} {
				expiry := time.Now().Add(gap)
				const n = 50000
				hits := 0
				for range n {
					if c.refreshEarly(delta, expiry, time.Now()) {
						hits++
					}
				}
				want := math.Exp(-float64(gap) / (float64(delta) * beta))
				got := float64(hits) / n
				if sigma := math.Sqrt(want * (1 - want) / n); math.Abs(got-want) > 5*sigma+1e-9 {
					t.Errorf("β=%v, %v before expiry: refreshed %.4f of hits, XFetch says %.4f (±%.4f)", beta, gap, got, want, 5*sigma)
				}
			}
			// A value that records no Δ (written by Set) still refreshes
			// early: with 1% of TTL before any load, then with this
			// Cache's recent loads.
			c.rand = func() float64 { return math.Exp(-1) } // gap = Δ·β exactly
			ttlShare := time.Duration(float64(DefaultTTL/100) * beta)
			if !c.refreshEarly(0, time.Now().Add(ttlShare-time.Millisecond), time.Now()) ||
				c.refreshEarly(0, time.Now().Add(ttlShare+time.Millisecond), time.Now()) {
				t.Errorf("β=%v: with no Δ, the refresh point is not 1%% of TTL·β before expiry", beta)
			}
			c.loadEWMA.add(time.Second)
			share := time.Duration(float64(time.Second) * beta)
			if !c.refreshEarly(0, time.Now().Add(share-time.Millisecond), time.Now()) ||
				c.refreshEarly(0, time.Now().Add(share+time.Millisecond), time.Now()) {
				t.Errorf("β=%v: with no Δ, the refresh point does not follow the Cache's recent loads", beta)
			}
		}
	})
}
