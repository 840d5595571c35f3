// Package breaker is the store circuit breaker: after repeated store
// failures the cache skips the store for a cool-down, then lets one call
// probe it.
//
// It is lock-free on the closed path (one atomic load per call), since it
// guards every cache hit.
package breaker

import (
	"sync/atomic"
	"time"
)

const (
	closed int32 = iota
	open
	halfOpen // one probe is in flight
)

// Outcome is what a guarded call reports.
type Outcome int

const (
	Success Outcome = iota // the store answered (a miss included)
	Failure                // the store failed or timed out
	Ignored                // the caller gave up: says nothing about the store
)

// Breaker opens after Threshold consecutive failures and stays open for
// CoolDown. A nil *Breaker always allows.
type Breaker struct {
	threshold int32
	coolDown  time.Duration
	onChange  func(to string) // told of every transition: "open", "half-open", "closed"

	state    atomic.Int32
	failures atomic.Int32
	openedAt atomic.Int64 // Unix nanoseconds
	opens    atomic.Uint64
}

// New returns a closed breaker. onChange, if not nil, is told of every
// transition, synchronously, by the call that caused it.
func New(threshold int, coolDown time.Duration, onChange func(to string)) *Breaker {
	return &Breaker{threshold: int32(threshold), coolDown: coolDown, onChange: onChange}
}

func (b *Breaker) changed(to string) {
	if b.onChange != nil {
		b.onChange(to)
	}
}

// Allow reports whether a store call may go ahead. When it returns true
// the caller must report the call's outcome to Done.
func (b *Breaker) Allow() bool {
	if b == nil {
		return true
	}
	switch b.state.Load() {
	case closed:
		return true
	case open:
		if time.Now().UnixNano()-b.openedAt.Load() < int64(b.coolDown) {
			return false
		}
		// The cool-down is over: the first caller probes.
		if b.state.CompareAndSwap(open, halfOpen) {
			b.changed("half-open")
			return true
		}
		return false
	}
	return false // a probe is already in flight
}

// Done reports the outcome of a call that Allow let through.
func (b *Breaker) Done(o Outcome) {
	if b == nil {
		return
	}
	switch o {
	case Success:
		b.failures.Store(0)
		if b.state.CompareAndSwap(halfOpen, closed) {
			b.changed("closed")
		}
	case Failure:
		if b.state.Load() == halfOpen {
			b.trip(halfOpen)
			return
		}
		if b.failures.Add(1) >= b.threshold {
			b.trip(closed)
		}
	case Ignored:
		// A probe whose caller left: let the next call probe instead.
		if b.state.Load() == halfOpen {
			b.openedAt.Store(time.Now().Add(-b.coolDown).UnixNano())
			b.state.CompareAndSwap(halfOpen, open)
		}
	}
}

func (b *Breaker) trip(from int32) {
	b.openedAt.Store(time.Now().UnixNano())
	if b.state.CompareAndSwap(from, open) {
		b.failures.Store(0)
		b.opens.Add(1)
		b.changed("open")
	}
}

// Opens returns how many times the breaker has opened.
func (b *Breaker) Opens() uint64 {
	if b == nil {
		return 0
	}
	return b.opens.Load()
}

// IsOpen reports whether calls are being skipped now.
func (b *Breaker) IsOpen() bool {
	return b != nil && b.state.Load() != closed
}
