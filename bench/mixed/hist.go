package mixed

import (
	"math/bits"
	"time"
)

// histBuckets covers 0 to 2^40 ns (about 18 minutes): exact below 128 ns,
// then 64 buckets per power of two, so a quantile is off by at most 1/64.
const histBuckets = 128 + 34*64

// hist is a log-linear latency histogram. Each goroutine keeps its own and
// they are summed at the end, so recording takes no lock and no atomic.
type hist []uint64

func newHist() hist { return make(hist, histBuckets) }

func histIndex(ns uint64) int {
	if ns < 128 {
		return int(ns)
	}
	e := bits.Len64(ns) - 7 // ns>>e is in [64, 128)
	i := 128 + (e-1)*64 + int(ns>>e) - 64
	return min(i, histBuckets-1)
}

// histLow is the smallest value that lands in bucket i.
func histLow(i int) uint64 {
	if i < 128 {
		return uint64(i)
	}
	e := (i-128)/64 + 1
	return uint64(64+(i-128)%64) << e
}

func (h hist) record(d time.Duration) { h[histIndex(uint64(max(d, 0)))]++ }

func (h hist) add(o hist) {
	for i, n := range o {
		h[i] += n
	}
}

func (h hist) count() uint64 {
	var n uint64
	for _, c := range h {
		n += c
	}
	return n
}

// quantile returns the value below which a fraction q of the samples fall,
// as the middle of its bucket; zero for an empty histogram.
func (h hist) quantile(q float64) time.Duration {
	n := h.count()
	if n == 0 {
		return 0
	}
	rank := uint64(q * float64(n-1)) // 0-based rank of the sample wanted
	var seen uint64
	for i, c := range h {
		seen += c
		if seen > rank {
			lo := histLow(i)
			hi := lo + 1
			if i+1 < len(h) {
				hi = histLow(i + 1)
			}
			return time.Duration(lo + (hi-lo)/2)
		}
	}
	return 0 // unreachable: seen reaches n > rank
}
