package backoff

import (
	"testing"
	"time"
)

func TestBackoffGrowsJittersAndCaps(t *testing.T) {
	b := New(10*time.Millisecond, 40*time.Millisecond)
	ms := time.Millisecond
	want := []time.Duration{10 * ms, 15 * ms, 22500 * time.Microsecond, 33750 * time.Microsecond, 40 * ms, 40 * ms}
	seen := map[time.Duration]bool{}
	for i, base := range want {
		got := b.Next()
		seen[got] = true
		if lo, hi := base-base/5, base+base/5; got < lo || got > hi {
			t.Fatalf("wait %d = %v, want within [%v, %v]", i, got, lo, hi)
		}
	}
	// Jitter: many waits at the cap are not all equal.
	for range 20 {
		seen[b.Next()] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct waits in 26: no jitter", len(seen))
	}
}

func TestBackoffZero(t *testing.T) {
	b := New(0, 0)
	if got := b.Next(); got != 0 {
		t.Fatalf("Next() = %v, want 0", got)
	}
}
