package mixed

import (
	"slices"
	"sync/atomic"
)

// A trace records which keys were requested in which millisecond, as
// key<<32 | millisecond since the run started. One process's trace holds
// each pair at least once; the ideal needs no more, and a pair per call
// would cost the fast systems more memory than their cache.
type trace struct {
	last []atomic.Int64 // per key: the last millisecond recorded + 1 (0: none)
}

func newTrace(keys int) *trace { return &trace{last: make([]atomic.Int64, keys)} }

// note appends (key, ms) to buf unless this process already recorded the
// pair. Goroutines race on last, so a pair may be appended twice (dedup
// removes it) but never missed: a goroutine appends unless it sees its own
// millisecond already there.
func (t *trace) note(buf []uint64, key int, ms int64) []uint64 {
	l := &t.last[key]
	for {
		old := l.Load()
		if old == ms+1 {
			return buf
		}
		if l.CompareAndSwap(old, ms+1) {
			return append(buf, uint64(key)<<32|uint64(ms))
		}
	}
}

// sortDedup sorts pairs by key, then millisecond, and drops repeats.
func sortDedup(pairs []uint64) []uint64 {
	slices.Sort(pairs)
	return slices.Compact(pairs)
}

// idealLoads is the fewest loads a fleet could make for these requests
// without serving a value older than its TTL. Per key, in time order: a
// request that finds no live value starts a load, whose value then serves
// every request for the next window milliseconds (the load's latency plus
// the TTL). It counts the loads that start in [from, to), walking from the
// beginning of the trace so the walk is warm exactly as the systems are.
//
// pairs are the merged traces of every process, sorted and deduplicated.
func idealLoads(pairs []uint64, window, from, to int64) uint64 {
	var n uint64
	curKey := ^uint64(0)
	var liveUntil int64 // the current key's value serves requests before this
	for _, p := range pairs {
		key, ms := p>>32, int64(p&0xffffffff)
		if key != curKey {
			curKey, liveUntil = key, -1
		}
		if ms < liveUntil {
			continue
		}
		liveUntil = ms + window
		if ms >= from && ms < to {
			n++
		}
	}
	return n
}
