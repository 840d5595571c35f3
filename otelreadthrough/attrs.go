package otelreadthrough

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/store"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Attribute keys. error.type is the semantic conventions' own.
const (
	keyNamespace = "readthrough.namespace"
	keyResult    = "readthrough.result"
	keySource    = "readthrough.source"
	keyNotFound  = "readthrough.not_found"
	keyOutcome   = "readthrough.outcome"
	keyOperation = "readthrough.operation"
	keyState     = "readthrough.state"
	keyReason    = "readthrough.reason"
	keyErrorType = "error.type"
)

// The values an Event takes today, each given a precomputed set per
// namespace. Others (from a later readthrough) take the slow path.
var (
	loadOutcomes = [...]string{"ok", "not-found", "error", "panic", "exit", "timeout"}
	storeOps     = [...]string{"get", "get-or-set", "set", "set-if-absent", "compare-and-swap", "compare-and-delete", "delete", "batch"}
	waitOutcomes = [...]string{"value", "leased", "timeout", "error", "cancelled"}
	states       = [...]string{"open", "half-open", "closed"}
	reasons      = [...]string{"size", "changed", "flush"}
)

const (
	reasonFlush = 2 // reasons[reasonFlush]: copies dropped by a flush
	nSources    = int(readthrough.SourceNear) + 1
	// maxOther caps the series made on the slow path per namespace; beyond
	// it, the open-ended values become otherValue.
	maxOther   = 256
	otherValue = "_OTHER"
)

// series is one attribute set of one instrument. A counter's series
// keeps its running total, observed at collection; a histogram's passes
// rec to Record. The option slices are made once, so passing them with
// ... allocates nothing.
type series struct {
	n   atomic.Int64
	obs []metric.ObserveOption
	rec []metric.RecordOption
}

func newSeries(kvs ...attribute.KeyValue) *series {
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	return &series{obs: []metric.ObserveOption{o}, rec: []metric.RecordOption{o}}
}

// sets are the series of one namespace.
type sets struct {
	ns     attribute.KeyValue
	hits   [nSources][2]*series // by Source, then NotFound
	miss   *series
	loads  [len(loadOutcomes)]*series
	stores [len(storeOps)]*series // calls that succeeded
	waits  [len(waitOutcomes)]*series
	states [len(states)]*series
	evicts [len(reasons)]*series
	flush  *series

	// other holds the series for values not known in advance: a failed
	// store call's error type, an outcome a later readthrough adds. Copied
	// on write under mu, like Recorder.namespaces, so a lookup takes no
	// lock and allocates nothing.
	other atomic.Pointer[map[otherKey]*series]
	mu    sync.Mutex
}

// otherKey names a set made on the slow path: the event kind and the
// values of its attributes (which ones depends on the kind).
type otherKey struct {
	kind readthrough.EventKind
	a, b string
}

func newSets(namespace string) *sets {
	ns := attribute.String(keyNamespace, namespace)
	s := &sets{ns: ns}
	hit := attribute.String(keyResult, "hit")
	for src := range s.hits {
		for nf := range s.hits[src] {
			s.hits[src][nf] = newSeries(ns, hit,
				attribute.String(keySource, readthrough.Source(src).String()),
				attribute.Bool(keyNotFound, nf == 1))
		}
	}
	s.miss = newSeries(ns, attribute.String(keyResult, "miss"))
	for i, v := range loadOutcomes {
		s.loads[i] = newSeries(ns, attribute.String(keyOutcome, v))
	}
	for i, v := range storeOps {
		s.stores[i] = newSeries(ns, attribute.String(keyOperation, v))
	}
	for i, v := range waitOutcomes {
		s.waits[i] = newSeries(ns, attribute.String(keyOutcome, v))
	}
	for i, v := range states {
		s.states[i] = newSeries(ns, attribute.String(keyState, v))
	}
	for i, v := range reasons {
		s.evicts[i] = newSeries(ns, attribute.String(keyReason, v))
	}
	s.flush = newSeries(ns)
	s.other.Store(&map[otherKey]*series{})
	return s
}

// index returns v's position in known, or -1.
func index(known []string, v string) int {
	for i, k := range known {
		if k == v {
			return i
		}
	}
	return -1
}

func (s *sets) hit(src readthrough.Source, notFound bool) *series {
	if src >= 0 && int(src) < nSources {
		nf := 0
		if notFound {
			nf = 1
		}
		return s.hits[src][nf]
	}
	return s.lookup(otherKey{readthrough.EventHit, src.String(), strconv.FormatBool(notFound)})
}

func (s *sets) load(outcome string) *series {
	if i := index(loadOutcomes[:], outcome); i >= 0 {
		return s.loads[i]
	}
	return s.lookup(otherKey{kind: readthrough.EventLoad, a: outcome})
}

func (s *sets) store(op string, err error) *series {
	if err != nil {
		return s.lookup(otherKey{readthrough.EventStore, op, errorType(err)})
	}
	if i := index(storeOps[:], op); i >= 0 {
		return s.stores[i]
	}
	return s.lookup(otherKey{kind: readthrough.EventStore, a: op})
}

func (s *sets) wait(outcome string) *series {
	if i := index(waitOutcomes[:], outcome); i >= 0 {
		return s.waits[i]
	}
	return s.lookup(otherKey{kind: readthrough.EventLockWait, a: outcome})
}

func (s *sets) breaker(state string) *series {
	if i := index(states[:], state); i >= 0 {
		return s.states[i]
	}
	return s.lookup(otherKey{kind: readthrough.EventBreaker, a: state})
}

func (s *sets) evict(reason string) *series {
	if i := index(reasons[:], reason); i >= 0 {
		return s.evicts[i]
	}
	return s.lookup(otherKey{kind: readthrough.EventNearEvict, a: reason})
}

// observe reports the running total of every counter series that has
// counted something: those never used make no series in the export.
func (s *sets) observe(o metric.Observer, r *Recorder) {
	for i := range s.hits {
		for _, x := range s.hits[i] {
			x.observe(o, r.requests)
		}
	}
	s.miss.observe(o, r.requests)
	for _, x := range s.states {
		x.observe(o, r.transitions)
	}
	for _, x := range s.evicts {
		x.observe(o, r.evictions)
	}
	s.flush.observe(o, r.flushes)
	for k, x := range *s.other.Load() {
		switch k.kind {
		case readthrough.EventHit:
			x.observe(o, r.requests)
		case readthrough.EventBreaker:
			x.observe(o, r.transitions)
		case readthrough.EventNearEvict:
			x.observe(o, r.evictions)
		}
	}
}

func (x *series) observe(o metric.Observer, inst metric.Int64Observable) {
	if n := x.n.Load(); n > 0 {
		o.ObserveInt64(inst, n, x.obs...)
	}
}

// lookup returns the series for k, making it if need be.
func (s *sets) lookup(k otherKey) *series {
	if o, ok := (*s.other.Load())[k]; ok {
		return o
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.other.Load()
	if o, ok := old[k]; ok {
		return o
	}
	if len(old) >= maxOther {
		k = k.capped()
		if o, ok := old[k]; ok {
			return o
		}
	}
	o := s.build(k)
	m := maps.Clone(old)
	m[k] = o
	s.other.Store(&m)
	return o
}

// capped is k with its open-ended values replaced by otherValue: a store
// call keeps a known operation.
func (k otherKey) capped() otherKey {
	if k.kind == readthrough.EventStore {
		if index(storeOps[:], k.a) < 0 {
			k.a = otherValue
		}
		if k.b != "" {
			k.b = otherValue
		}
		return k
	}
	k.a = otherValue
	return k
}

func (s *sets) build(k otherKey) *series {
	switch k.kind {
	case readthrough.EventHit:
		return newSeries(s.ns, attribute.String(keyResult, "hit"),
			attribute.String(keySource, k.a), attribute.Bool(keyNotFound, k.b == "true"))
	case readthrough.EventStore:
		if k.b == "" {
			return newSeries(s.ns, attribute.String(keyOperation, k.a))
		}
		return newSeries(s.ns, attribute.String(keyOperation, k.a), attribute.String(keyErrorType, k.b))
	case readthrough.EventBreaker:
		return newSeries(s.ns, attribute.String(keyState, k.a))
	case readthrough.EventNearEvict:
		return newSeries(s.ns, attribute.String(keyReason, k.a))
	}
	return newSeries(s.ns, attribute.String(keyOutcome, k.a)) // EventLoad, EventLockWait
}

// errorType is the error.type of a failed store call or load: a few causes
// the cache itself tells apart by name, else the type of the innermost
// error in the chain (the wrappers above it, such as fmt's %w, say nothing
// of the cause). Types are few in a program, so the values stay few.
func errorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, store.ErrTooLarge):
		return "too_large"
	case errors.Is(err, errors.ErrUnsupported):
		return "unsupported"
	}
	inner := err
	for e := err; e != nil; e = errors.Unwrap(e) {
		if t, ok := e.(interface{ Timeout() bool }); ok && t.Timeout() {
			return "timeout" // a net.Error, say: a client's own read timeout
		}
		inner = e
	}
	return typeName(reflect.TypeOf(inner))
}

// typeName names t by its import path, as the semantic conventions ask
// of error.type: "*net.OpError", "github.com/x/y.Error".
func typeName(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		return "*" + typeName(t.Elem())
	}
	if t.Name() == "" || t.PkgPath() == "" {
		return t.String()
	}
	return t.PkgPath() + "." + t.Name()
}
