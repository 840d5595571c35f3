// Package otelreadthrough reports what a readthrough Cache does as
// OpenTelemetry metrics, and optionally each load as a span. Its
// [Recorder] is a [readthrough.Recorder]: set it in Options.Recorder.
//
//	rec, err := otelreadthrough.New() // on otel.GetMeterProvider()
//	if err != nil {
//		return err
//	}
//	products, err := readthrough.New[int, Product](store, &readthrough.Options[int, Product]{
//		Namespace: "product",
//		Recorder:  rec,
//	})
//
// One Recorder serves every Cache of a program: each measurement carries
// the namespace of the Cache it came from. Make one per MeterProvider.
//
// # Metrics
//
// Names and units follow the OpenTelemetry semantic conventions:
// lowercase, dot-separated, durations as histograms in seconds, counts
// with a UCUM annotation. Every series has readthrough.namespace.
//
//	instrument                            kind       unit          attributes
//	readthrough.requests                  counter    {request}     readthrough.result; on hits readthrough.source, readthrough.not_found
//	readthrough.load.duration             histogram  s             readthrough.outcome
//	readthrough.store.operation.duration  histogram  s             readthrough.operation; error.type if it failed
//	readthrough.lock.wait.duration        histogram  s             readthrough.outcome
//	readthrough.breaker.transitions       counter    {transition}  readthrough.state
//	readthrough.near.evictions            counter    {entry}       readthrough.reason
//	readthrough.near.flushes              counter    {flush}
//
// What each counts, and the values its attributes take:
//
//   - readthrough.requests: calls answered from the cache
//     (readthrough.result "hit") or not ("miss": the call joined or
//     started a load). A hit's readthrough.source says how: "near",
//     "cache", "stale", "lock-wait" or "shared" (as [readthrough.Source]
//     prints them); readthrough.not_found is true for a cached not-found.
//     A call that missed and was then served an expired value by
//     fail-safe counts as a miss and as a "stale" hit.
//   - readthrough.load.duration: each loader call, with
//     readthrough.outcome "ok", "not-found", "error", "panic", "exit"
//     (runtime.Goexit) or "timeout" (recorded as LoadTimeout).
//   - readthrough.store.operation.duration: each store call, with
//     readthrough.operation "get", "get-or-set", "set", "set-if-absent",
//     "compare-and-swap", "compare-and-delete", "delete" or "batch". A
//     failed call has error.type too: "timeout" (a deadline, or an error
//     whose Timeout method says so), "canceled", "too_large"
//     (store.ErrTooLarge), "unsupported" (errors.ErrUnsupported), or the
//     type of the innermost error of its chain, named by import path
//     ("*net.OpError"; "*errors.errorString" for an errors.New sentinel).
//     Calls skipped while the breaker is open are not store calls.
//   - readthrough.lock.wait.duration: each wait on another process's
//     lease, with readthrough.outcome "value" (it landed), "leased" (the
//     lease was freed and this flight took it), "timeout"
//     (Lock.MaxWait), "error" (the store failed) or "cancelled".
//   - readthrough.breaker.transitions: the store circuit breaker entering
//     readthrough.state "open", "half-open" or "closed".
//   - readthrough.near.evictions: near copies dropped, with
//     readthrough.reason "size" (the near cache was full), "changed" (a
//     writer changed the key) or "flush" (all at once; these are not in
//     [readthrough.Stats].NearEvicted).
//   - readthrough.near.flushes: the store's notification link was lost,
//     and every near copy dropped.
//
// Attribute names carry the "readthrough." prefix: a bare "namespace"
// would collide with the label Kubernetes service discovery puts on
// every scraped series, and Prometheus would rename one of them.
//
// The histograms advise bucket boundaries fit for what they time: store
// calls from 100 µs, loads and lock waits from 1 ms to 60 s. A View on
// the MeterProvider overrides them.
//
// # Spans
//
// With [WithTracerProvider], each load is also a span,
// "readthrough.load", from the load's start to its end, with
// readthrough.namespace and readthrough.outcome, and when it failed
// (any outcome but "ok" and "not-found") an error status and error.type.
// An Event carries no context, so it is a root span, not a child of the
// request that started the load.
//
// # Cost
//
// Record runs on the caller's path, a near hit's included, and allocates
// nothing. Attribute sets are built once per namespace and found without
// a lock. The counters are asynchronous: Record adds to a total of its
// own (an atomic add, where the SDK's synchronous Add costs hundreds of
// nanoseconds) and a callback reports the totals at each collection; the
// histograms are recorded as they happen. Values the package does not
// know in advance (an error type, an outcome a later readthrough adds)
// take a slower path and are capped at 256 per namespace, past which
// they read "_OTHER", so the number of series stays bounded.
package otelreadthrough

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the Meter and Tracer a
// Recorder uses.
const ScopeName = "github.com/readthrough-go/readthrough/otelreadthrough"

// Option configures [New].
type Option func(*config)

type config struct {
	mp metric.MeterProvider
	tp trace.TracerProvider
}

// WithMeterProvider sets where the metrics go. Default (and for nil):
// otel.GetMeterProvider() at the time of [New].
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithTracerProvider turns on a span per load (see the package doc),
// made by tp. Off by default, and for nil.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// Recorder is a [readthrough.Recorder] that turns events into
// OpenTelemetry measurements. It is safe for concurrent use, and one
// Recorder may serve many Caches. Create it with [New]; the zero Recorder
// records nothing.
type Recorder struct {
	// The counters are observable: Record adds to a running total of its
	// own (an atomic add), and a callback reports the totals at
	// collection. A synchronous counter's Add costs a few hundred
	// nanoseconds in the SDK, more than the near hit it would count.
	requests    metric.Int64ObservableCounter
	transitions metric.Int64ObservableCounter
	evictions   metric.Int64ObservableCounter
	flushes     metric.Int64ObservableCounter
	reg         metric.Registration

	loadDuration  metric.Float64Histogram
	storeDuration metric.Float64Histogram
	waitDuration  metric.Float64Histogram
	tracer        trace.Tracer // nil: no spans

	// namespaces maps a namespace to its series. It is copied on write (a
	// new namespace is rare: one per Cache), so a lookup is an atomic
	// load and a map read, with no lock.
	namespaces atomic.Pointer[map[string]*sets]
	mu         sync.Mutex // serialises writers of namespaces
}

var _ readthrough.Recorder = (*Recorder)(nil)

// Bucket boundaries, in seconds. Store calls on an in-process store take
// microseconds and on Redis a fraction of a millisecond; loads and lock
// waits last as long as the upstream, up to LoadTimeout (30 s by default).
var (
	storeBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	loadBuckets  = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
)

// New returns a Recorder whose instruments are made by the configured
// MeterProvider. It fails if the provider refuses an instrument or the
// callback that reports the counters.
func New(opts ...Option) (*Recorder, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	m := c.mp.Meter(ScopeName)
	r := &Recorder{}
	r.namespaces.Store(&map[string]*sets{})
	var errs [8]error
	r.requests, errs[0] = m.Int64ObservableCounter("readthrough.requests",
		metric.WithUnit("{request}"),
		metric.WithDescription("Cache calls, by result: hit (and how it was answered) or miss."))
	r.transitions, errs[1] = m.Int64ObservableCounter("readthrough.breaker.transitions",
		metric.WithUnit("{transition}"),
		metric.WithDescription("Store circuit breaker state changes, by the state entered."))
	r.evictions, errs[2] = m.Int64ObservableCounter("readthrough.near.evictions",
		metric.WithUnit("{entry}"),
		metric.WithDescription("Near-cache copies dropped, by reason."))
	r.flushes, errs[3] = m.Int64ObservableCounter("readthrough.near.flushes",
		metric.WithUnit("{flush}"),
		metric.WithDescription("Times every near-cache copy was dropped because the store's notification link was lost."))
	r.loadDuration, errs[4] = m.Float64Histogram("readthrough.load.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of loader calls, by outcome."),
		metric.WithExplicitBucketBoundaries(loadBuckets...))
	r.storeDuration, errs[5] = m.Float64Histogram("readthrough.store.operation.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of store calls, by operation, with error.type when they failed."),
		metric.WithExplicitBucketBoundaries(storeBuckets...))
	r.waitDuration, errs[6] = m.Float64Histogram("readthrough.lock.wait.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time spent waiting on another process's lease, by outcome."),
		metric.WithExplicitBucketBoundaries(loadBuckets...))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	r.reg, errs[7] = m.RegisterCallback(r.observe, r.requests, r.transitions, r.evictions, r.flushes)
	if errs[7] != nil {
		return nil, errs[7]
	}
	if c.tp != nil {
		r.tracer = c.tp.Tracer(ScopeName)
	}
	return r, nil
}

// Close unregisters the callback that reports the counters from the
// MeterProvider: after it they are no longer exported, though Record
// still works. A program that makes one Recorder for its life need not
// call it; one that makes Recorders over and over on one MeterProvider
// must, or the provider keeps every one.
func (r *Recorder) Close() error {
	if r.reg == nil {
		return nil
	}
	return r.reg.Unregister()
}

// observe is the callback that reports the counters' totals.
func (r *Recorder) observe(_ context.Context, o metric.Observer) error {
	for _, s := range *r.namespaces.Load() {
		s.observe(o, r)
	}
	return nil
}

// bg is the context of every measurement: an Event carries none.
var bg = context.Background()

// Record implements [readthrough.Recorder]. Events of a kind it does not
// know are ignored.
func (r *Recorder) Record(e readthrough.Event) {
	s := r.sets(e.Namespace)
	if s == nil {
		return // the zero Recorder
	}
	switch e.Kind {
	case readthrough.EventHit:
		s.hit(e.Source, e.NotFound).n.Add(1)
	case readthrough.EventMiss:
		s.miss.n.Add(1)
	case readthrough.EventLoad:
		r.loadDuration.Record(bg, e.Duration.Seconds(), s.load(e.Outcome).rec...)
		if r.tracer != nil {
			r.span(s, e)
		}
	case readthrough.EventStore:
		r.storeDuration.Record(bg, e.Duration.Seconds(), s.store(e.Op, e.Err).rec...)
	case readthrough.EventLockWait:
		r.waitDuration.Record(bg, e.Duration.Seconds(), s.wait(e.Outcome).rec...)
	case readthrough.EventBreaker:
		s.breaker(e.Outcome).n.Add(1)
	case readthrough.EventNearEvict:
		if e.N > 0 {
			s.evict(e.Outcome).n.Add(int64(e.N))
		}
	case readthrough.EventNearFlush:
		s.flush.n.Add(1)
		if e.N > 0 {
			s.evicts[reasonFlush].n.Add(int64(e.N))
		}
	}
}

// span reports a finished load as a span that began Duration ago.
func (r *Recorder) span(s *sets, e readthrough.Event) {
	end := time.Now()
	_, sp := r.tracer.Start(bg, "readthrough.load",
		trace.WithTimestamp(end.Add(-e.Duration)),
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(s.ns, attribute.String(keyOutcome, e.Outcome)))
	if e.Outcome != "ok" && e.Outcome != "not-found" {
		desc, typ := e.Outcome, e.Outcome // "panic", "exit", "timeout"
		if e.Err != nil {
			desc, typ = e.Err.Error(), errorType(e.Err)
		}
		sp.SetAttributes(attribute.String(keyErrorType, typ))
		sp.SetStatus(codes.Error, desc)
	}
	sp.End(trace.WithTimestamp(end))
}

// sets returns the series of namespace ns, making them the first time ns
// is seen; nil for the zero Recorder.
func (r *Recorder) sets(ns string) *sets {
	m := r.namespaces.Load()
	if m == nil {
		return nil
	}
	if s, ok := (*m)[ns]; ok {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.namespaces.Load()
	if s, ok := old[ns]; ok {
		return s
	}
	s := newSets(ns)
	grown := maps.Clone(old)
	grown[ns] = s
	r.namespaces.Store(&grown)
	return s
}
