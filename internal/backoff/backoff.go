// Package backoff spaces the polls of a process waiting on another's lock.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff yields waits that start at an initial value and grow by half each
// time up to a cap. Each wait is jittered by ±20%, so processes that started
// waiting together do not poll the store in lockstep.
type Backoff struct {
	next, cap time.Duration
}

// New returns a Backoff starting at initial and capped at max.
func New(initial, max time.Duration) Backoff {
	return Backoff{next: initial, cap: max}
}

// Next returns the next wait.
func (b *Backoff) Next() time.Duration {
	d := b.next
	b.next = min(b.next+b.next/2, b.cap)
	if d <= 0 {
		return 0
	}
	// d * [0.8, 1.2)
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}
