package otelreadthrough_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	rt "github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/otelreadthrough"
	"github.com/readthrough-go/readthrough/store"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// timeoutError is a client's own timeout, as a net.Error reports it.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// replyError is a store client's error type, as error.type names it.
type replyError struct{ msg string }

func (e *replyError) Error() string { return e.msg }

// TestRecordEvents: each kind of event, made by hand, lands on its
// instrument with its attributes and value, and on nothing else.
func TestRecordEvents(t *testing.T) {
	t.Parallel()
	const replyType = "*github.com/readthrough-go/readthrough/otelreadthrough_test.replyError"
	tests := []struct {
		name   string
		events []rt.Event
		want   []string
	}{
		{
			name: "hits by source, and a cached not-found",
			events: []rt.Event{
				{Kind: rt.EventHit, Namespace: "p", Source: rt.SourceNear},
				{Kind: rt.EventHit, Namespace: "p", Source: rt.SourceNear},
				{Kind: rt.EventHit, Namespace: "p", Source: rt.SourceCache, NotFound: true},
				{Kind: rt.EventHit, Namespace: "p", Source: rt.SourceStale},
				{Kind: rt.EventHit, Namespace: "p", Source: rt.SourceLockWait},
				{Kind: rt.EventHit, Namespace: "p", Source: rt.SourceShared},
				{Kind: rt.EventHit, Namespace: "q", Source: rt.SourceCache},
			},
			want: []string{
				"readthrough.requests{readthrough.namespace=p,readthrough.not_found=false,readthrough.result=hit,readthrough.source=lock-wait} 1",
				"readthrough.requests{readthrough.namespace=p,readthrough.not_found=false,readthrough.result=hit,readthrough.source=near} 2",
				"readthrough.requests{readthrough.namespace=p,readthrough.not_found=false,readthrough.result=hit,readthrough.source=shared} 1",
				"readthrough.requests{readthrough.namespace=p,readthrough.not_found=false,readthrough.result=hit,readthrough.source=stale} 1",
				"readthrough.requests{readthrough.namespace=p,readthrough.not_found=true,readthrough.result=hit,readthrough.source=cache} 1",
				"readthrough.requests{readthrough.namespace=q,readthrough.not_found=false,readthrough.result=hit,readthrough.source=cache} 1",
			},
		},
		{
			name:   "a source this package does not know",
			events: []rt.Event{{Kind: rt.EventHit, Namespace: "p", Source: rt.Source(42), NotFound: true}},
			want:   []string{"readthrough.requests{readthrough.namespace=p,readthrough.not_found=true,readthrough.result=hit,readthrough.source=Source(42)} 1"},
		},
		{
			name:   "misses",
			events: []rt.Event{{Kind: rt.EventMiss, Namespace: "p", Key: "p:1"}, {Kind: rt.EventMiss, Namespace: "p", Key: "p:2"}},
			want:   []string{"readthrough.requests{readthrough.namespace=p,readthrough.result=miss} 2"},
		},
		{
			name: "loads by outcome, in seconds",
			events: []rt.Event{
				{Kind: rt.EventLoad, Namespace: "p", Outcome: "ok", Duration: 1500 * time.Millisecond},
				{Kind: rt.EventLoad, Namespace: "p", Outcome: "ok", Duration: 500 * time.Millisecond},
				{Kind: rt.EventLoad, Namespace: "p", Outcome: "not-found", Duration: 250 * time.Millisecond},
				{Kind: rt.EventLoad, Namespace: "p", Outcome: "error", Duration: time.Second, Err: errors.New("upstream down")},
				{Kind: rt.EventLoad, Namespace: "p", Outcome: "panic", Duration: time.Millisecond},
				{Kind: rt.EventLoad, Namespace: "p", Outcome: "exit", Duration: time.Millisecond},
				{Kind: rt.EventLoad, Namespace: "p", Outcome: "timeout", Duration: 30 * time.Second},
				{Kind: rt.EventLoad, Namespace: "p", Outcome: "something-new", Duration: time.Second},
			},
			want: []string{
				"readthrough.load.duration{readthrough.namespace=p,readthrough.outcome=error} count=1 sum=1",
				"readthrough.load.duration{readthrough.namespace=p,readthrough.outcome=exit} count=1 sum=0.001",
				"readthrough.load.duration{readthrough.namespace=p,readthrough.outcome=not-found} count=1 sum=0.25",
				"readthrough.load.duration{readthrough.namespace=p,readthrough.outcome=ok} count=2 sum=2",
				"readthrough.load.duration{readthrough.namespace=p,readthrough.outcome=panic} count=1 sum=0.001",
				"readthrough.load.duration{readthrough.namespace=p,readthrough.outcome=something-new} count=1 sum=1",
				"readthrough.load.duration{readthrough.namespace=p,readthrough.outcome=timeout} count=1 sum=30",
			},
		},
		{
			name: "store calls: error.type only when they failed",
			events: []rt.Event{
				{Kind: rt.EventStore, Namespace: "p", Op: "get", Duration: 250 * time.Microsecond},
				{Kind: rt.EventStore, Namespace: "p", Op: "get", Duration: 250 * time.Microsecond},
				{Kind: rt.EventStore, Namespace: "p", Op: "compare-and-swap", Duration: time.Millisecond},
				{Kind: rt.EventStore, Namespace: "p", Op: "get", Duration: time.Second, Err: fmt.Errorf("readthrough: store call abandoned: %w", context.DeadlineExceeded)},
				{Kind: rt.EventStore, Namespace: "p", Op: "get", Duration: time.Millisecond, Err: fmt.Errorf("read: %w", timeoutError{})},
				{Kind: rt.EventStore, Namespace: "p", Op: "set", Duration: time.Millisecond, Err: context.Canceled},
				{Kind: rt.EventStore, Namespace: "p", Op: "set", Duration: time.Millisecond, Err: fmt.Errorf("Set: %w", store.ErrTooLarge)},
				{Kind: rt.EventStore, Namespace: "p", Op: "get-or-set", Duration: time.Millisecond, Err: fmt.Errorf("wrapper: %w", errors.ErrUnsupported)},
				{Kind: rt.EventStore, Namespace: "p", Op: "delete", Duration: time.Millisecond, Err: fmt.Errorf("Delete: %w", &replyError{"READONLY"})},
				{Kind: rt.EventStore, Namespace: "p", Op: "delete", Duration: time.Millisecond, Err: &replyError{"LOADING"}},
				{Kind: rt.EventStore, Namespace: "p", Op: "batch", Duration: time.Millisecond, Err: errors.New("boom")},
				{Kind: rt.EventStore, Namespace: "p", Op: "scan", Duration: time.Millisecond},
			},
			want: []string{
				"readthrough.store.operation.duration{error.type=*errors.errorString,readthrough.namespace=p,readthrough.operation=batch} count=1 sum=0.001",
				"readthrough.store.operation.duration{error.type=" + replyType + ",readthrough.namespace=p,readthrough.operation=delete} count=2 sum=0.002",
				"readthrough.store.operation.duration{error.type=canceled,readthrough.namespace=p,readthrough.operation=set} count=1 sum=0.001",
				"readthrough.store.operation.duration{error.type=timeout,readthrough.namespace=p,readthrough.operation=get} count=2 sum=1.001",
				"readthrough.store.operation.duration{error.type=too_large,readthrough.namespace=p,readthrough.operation=set} count=1 sum=0.001",
				"readthrough.store.operation.duration{error.type=unsupported,readthrough.namespace=p,readthrough.operation=get-or-set} count=1 sum=0.001",
				"readthrough.store.operation.duration{readthrough.namespace=p,readthrough.operation=compare-and-swap} count=1 sum=0.001",
				"readthrough.store.operation.duration{readthrough.namespace=p,readthrough.operation=get} count=2 sum=0.0005",
				"readthrough.store.operation.duration{readthrough.namespace=p,readthrough.operation=scan} count=1 sum=0.001",
			},
		},
		{
			name: "lock waits by outcome",
			events: []rt.Event{
				{Kind: rt.EventLockWait, Namespace: "p", Outcome: "value", Duration: 2 * time.Second},
				{Kind: rt.EventLockWait, Namespace: "p", Outcome: "leased", Duration: time.Second},
				{Kind: rt.EventLockWait, Namespace: "p", Outcome: "timeout", Duration: 5 * time.Second},
				{Kind: rt.EventLockWait, Namespace: "p", Outcome: "error", Duration: time.Second},
				{Kind: rt.EventLockWait, Namespace: "p", Outcome: "cancelled", Duration: time.Second},
			},
			want: []string{
				"readthrough.lock.wait.duration{readthrough.namespace=p,readthrough.outcome=cancelled} count=1 sum=1",
				"readthrough.lock.wait.duration{readthrough.namespace=p,readthrough.outcome=error} count=1 sum=1",
				"readthrough.lock.wait.duration{readthrough.namespace=p,readthrough.outcome=leased} count=1 sum=1",
				"readthrough.lock.wait.duration{readthrough.namespace=p,readthrough.outcome=timeout} count=1 sum=5",
				"readthrough.lock.wait.duration{readthrough.namespace=p,readthrough.outcome=value} count=1 sum=2",
			},
		},
		{
			name: "breaker transitions by state",
			events: []rt.Event{
				{Kind: rt.EventBreaker, Namespace: "p", Outcome: "open"},
				{Kind: rt.EventBreaker, Namespace: "p", Outcome: "half-open"},
				{Kind: rt.EventBreaker, Namespace: "p", Outcome: "open"},
				{Kind: rt.EventBreaker, Namespace: "p", Outcome: "half-open"},
				{Kind: rt.EventBreaker, Namespace: "p", Outcome: "closed"},
			},
			want: []string{
				"readthrough.breaker.transitions{readthrough.namespace=p,readthrough.state=closed} 1",
				"readthrough.breaker.transitions{readthrough.namespace=p,readthrough.state=half-open} 2",
				"readthrough.breaker.transitions{readthrough.namespace=p,readthrough.state=open} 2",
			},
		},
		{
			name: "near evictions add N; a flush counts once and its copies as evictions",
			events: []rt.Event{
				{Kind: rt.EventNearEvict, Namespace: "p", Outcome: "size", N: 3},
				{Kind: rt.EventNearEvict, Namespace: "p", Outcome: "size", N: 2},
				{Kind: rt.EventNearEvict, Namespace: "p", Key: "p:1", Outcome: "changed", N: 1},
				{Kind: rt.EventNearEvict, Namespace: "p", Outcome: "size", N: 0},
				{Kind: rt.EventNearFlush, Namespace: "p", Err: errors.New("connection reset"), N: 7},
				{Kind: rt.EventNearFlush, Namespace: "p", Err: errors.New("connection reset"), N: 0},
			},
			want: []string{
				"readthrough.near.evictions{readthrough.namespace=p,readthrough.reason=changed} 1",
				"readthrough.near.evictions{readthrough.namespace=p,readthrough.reason=flush} 7",
				"readthrough.near.evictions{readthrough.namespace=p,readthrough.reason=size} 5",
				"readthrough.near.flushes{readthrough.namespace=p} 2",
			},
		},
		{
			name:   "an unknown kind is ignored",
			events: []rt.Event{{Kind: rt.EventKind(200), Namespace: "p", N: 1, Duration: time.Second}, {Namespace: "p"}},
			want:   nil,
		},
		{
			name:   "an empty namespace is a namespace",
			events: []rt.Event{{Kind: rt.EventMiss}},
			want:   []string{"readthrough.requests{readthrough.namespace=,readthrough.result=miss} 1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := newMeter(t)
			for _, e := range tt.events {
				m.rec.Record(e)
			}
			assert.Equal(t, tt.want, m.collect(t).lines())
		})
	}
}

// TestOpenEndedValuesAreCapped: values the package does not know in
// advance get series of their own, up to a bound per namespace; beyond
// it they share "_OTHER", and nothing is lost from the counts.
func TestOpenEndedValuesAreCapped(t *testing.T) {
	t.Parallel()
	m := newMeter(t)
	const n = 300
	for i := range n {
		m.rec.Record(rt.Event{Kind: rt.EventLoad, Namespace: "p", Outcome: fmt.Sprint("new-", i), Duration: time.Second})
	}
	m.rec.Record(rt.Event{Kind: rt.EventLoad, Namespace: "p", Outcome: "new-0", Duration: time.Second})
	// Known values keep their own sets past the bound.
	m.rec.Record(rt.Event{Kind: rt.EventLoad, Namespace: "p", Outcome: "ok", Duration: time.Second})
	m.rec.Record(rt.Event{Kind: rt.EventStore, Namespace: "p", Op: "get", Err: &replyError{"x"}})
	m.rec.Record(rt.Event{Kind: rt.EventLoad, Namespace: "q", Outcome: "new-299", Duration: time.Second})

	c := m.collect(t)
	lines := c.lines()
	assert.Len(t, lines, 256+1+1+1+1, "256 own series, _OTHER, ok, the store call, q's")
	cnt, _ := c.hist(loadDur, ns("p"), outcome("new-0"))
	assert.EqualValues(t, 2, cnt, "a value seen before the bound keeps its series")
	cnt, _ = c.hist(loadDur, ns("p"), outcome("_OTHER"))
	assert.EqualValues(t, n-256, cnt)
	cnt, _ = c.hist(loadDur, ns("p"), outcome("ok"))
	assert.EqualValues(t, 1, cnt)
	cnt, _ = c.hist(storeDur, ns("p"), op("get"), errType("_OTHER"))
	assert.EqualValues(t, 1, cnt, "past the bound an error type is _OTHER, its operation kept")
	cnt, _ = c.hist(loadDur, ns("q"), outcome("new-299"))
	assert.EqualValues(t, 1, cnt, "the bound is per namespace")
}

// TestConcurrentRecords: many goroutines, many namespaces seen for the
// first time at once; every event is counted once, in its namespace.
func TestConcurrentRecords(t *testing.T) {
	t.Parallel()
	m := newMeter(t)
	const goroutines, namespaces, each = 16, 20, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				n := fmt.Sprint("ns", (g+i)%namespaces)
				m.rec.Record(rt.Event{Kind: rt.EventHit, Namespace: n, Source: rt.SourceNear})
				m.rec.Record(rt.Event{Kind: rt.EventStore, Namespace: n, Op: "get", Err: &replyError{"x"}})
			}
		})
	}
	wg.Wait()
	c := m.collect(t)
	assert.EqualValues(t, goroutines*each, c.total(requests))
	for i := range namespaces {
		n := fmt.Sprint("ns", i)
		want := int64(goroutines * each / namespaces)
		assert.Equal(t, want, c.count(requests, ns(n), result("hit"), source("near"), notFound(false)), n)
		cnt, _ := c.hist(storeDur, ns(n), op("get"), errType("*github.com/readthrough-go/readthrough/otelreadthrough_test.replyError"))
		assert.EqualValues(t, want, cnt, n)
	}
}

// TestInstruments: names, units, kinds and descriptions, as the package
// doc's table says.
func TestInstruments(t *testing.T) {
	t.Parallel()
	m := newMeter(t)
	for _, e := range []rt.Event{
		{Kind: rt.EventHit}, {Kind: rt.EventLoad, Outcome: "ok"}, {Kind: rt.EventStore, Op: "get"},
		{Kind: rt.EventLockWait, Outcome: "value"}, {Kind: rt.EventBreaker, Outcome: "open"},
		{Kind: rt.EventNearEvict, Outcome: "size", N: 1}, {Kind: rt.EventNearFlush},
	} {
		m.rec.Record(e)
	}
	c := m.collect(t)
	require.Len(t, c.rm.ScopeMetrics, 1)
	assert.Equal(t, otelreadthrough.ScopeName, c.rm.ScopeMetrics[0].Scope.Name)
	want := map[string]string{
		requests: "{request}", loadDur: "s", storeDur: "s", waitDur: "s",
		breaker: "{transition}", evictions: "{entry}", flushes: "{flush}",
	}
	got := map[string]string{}
	for _, mm := range c.rm.ScopeMetrics[0].Metrics {
		got[mm.Name] = mm.Unit
		assert.NotEmpty(t, mm.Description, mm.Name)
	}
	assert.Equal(t, want, got)
}

// TestHistogramBuckets: the advised boundaries reach down to what each
// histogram times: store calls below a millisecond.
func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	m := newMeter(t)
	m.rec.Record(rt.Event{Kind: rt.EventStore, Op: "get", Duration: 200 * time.Microsecond})
	m.rec.Record(rt.Event{Kind: rt.EventLoad, Outcome: "ok", Duration: 20 * time.Second})
	c := m.collect(t)
	for _, tt := range []struct {
		name          string
		first, last   float64
		bucketOfValue int
	}{
		{storeDur, 0.0001, 5, 1}, // 200 µs in (100 µs, 250 µs]
		{loadDur, 0.001, 60, 13}, // 20 s in (10 s, 30 s]
	} {
		mm, ok := c.metric(tt.name)
		require.True(t, ok)
		dp := mm.Data.(metricdata.Histogram[float64]).DataPoints[0]
		assert.Equal(t, tt.first, dp.Bounds[0], tt.name)
		assert.Equal(t, tt.last, dp.Bounds[len(dp.Bounds)-1], tt.name)
		assert.EqualValues(t, 1, dp.BucketCounts[tt.bucketOfValue], "%s: %v", tt.name, dp.BucketCounts)
	}
}

// TestDefaultMeterProvider: without WithMeterProvider (or with a nil
// one), the global provider at the time of New is used.
func TestDefaultMeterProvider(t *testing.T) {
	// Not parallel: it sets the global MeterProvider.
	prev := otel.GetMeterProvider()
	t.Cleanup(func() { otel.SetMeterProvider(prev) })
	reader := sdkmetric.NewManualReader()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	m := &meter{reader: reader}
	for _, opts := range [][]otelreadthrough.Option{nil, {otelreadthrough.WithMeterProvider(nil), nil}} {
		rec, err := otelreadthrough.New(opts...)
		require.NoError(t, err)
		rec.Record(rt.Event{Kind: rt.EventMiss, Namespace: "g"})
	}
	assert.EqualValues(t, 2, m.collect(t).count(requests, ns("g"), result("miss")))
}

// refusingProvider makes a Meter that fails to make one instrument.
type refusingProvider struct{ noop.MeterProvider }

func (refusingProvider) Meter(string, ...metric.MeterOption) metric.Meter { return refusingMeter{} }

type refusingMeter struct{ noop.Meter }

var errRefused = errors.New("instrument refused")

func (refusingMeter) Float64Histogram(name string, _ ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	if name == "readthrough.lock.wait.duration" {
		return nil, errRefused
	}
	return noop.Float64Histogram{}, nil
}

// TestNewFailsWhenAnInstrumentIsRefused: New returns the provider's
// error, not a Recorder that would crash on a nil instrument.
func TestNewFailsWhenAnInstrumentIsRefused(t *testing.T) {
	t.Parallel()
	rec, err := otelreadthrough.New(otelreadthrough.WithMeterProvider(refusingProvider{}))
	require.ErrorIs(t, err, errRefused)
	assert.Nil(t, rec)
}

// TestHitPathAllocatesNothing: recording a hit or a store call allocates
// nothing: the attribute sets and option slices are built once per
// namespace. On the SDK too, since the options carry a ready attribute.Set
// (metric.WithAttributes would build one per call).
func TestHitPathAllocatesNothing(t *testing.T) {
	hit := rt.Event{Kind: rt.EventHit, Namespace: "p", Key: "p:1", Source: rt.SourceNear}
	get := rt.Event{Kind: rt.EventStore, Namespace: "p", Key: "p:1", Op: "get", Duration: time.Microsecond}
	noopRec, err := otelreadthrough.New(otelreadthrough.WithMeterProvider(noop.NewMeterProvider()))
	require.NoError(t, err)
	for name, rec := range map[string]*otelreadthrough.Recorder{"noop": noopRec, "sdk": newMeter(t).rec} {
		rec.Record(hit) // the first sight of a namespace builds its sets
		rec.Record(get)
		assert.Zero(t, testing.AllocsPerRun(1000, func() { rec.Record(hit) }), "%s: hit", name)
		assert.Zero(t, testing.AllocsPerRun(1000, func() { rec.Record(get) }), "%s: store get", name)
	}
}

// TestTwoRecordersOneProvider: two Recorders reporting one namespace to
// one MeterProvider add up (the Go SDK sums duplicate observations); after
// Close, one's counters are no longer reported, its histograms still are.
func TestTwoRecordersOneProvider(t *testing.T) {
	t.Parallel()
	m := newMeter(t)
	other, err := otelreadthrough.New(otelreadthrough.WithMeterProvider(m.provider))
	require.NoError(t, err)
	m.rec.Record(rt.Event{Kind: rt.EventMiss, Namespace: "p"})
	other.Record(rt.Event{Kind: rt.EventMiss, Namespace: "p"})
	other.Record(rt.Event{Kind: rt.EventMiss, Namespace: "p"})
	assert.EqualValues(t, 3, m.collect(t).count(requests, ns("p"), result("miss")))

	require.NoError(t, other.Close())
	other.Record(rt.Event{Kind: rt.EventMiss, Namespace: "p"})
	other.Record(rt.Event{Kind: rt.EventLoad, Namespace: "p", Outcome: "ok", Duration: time.Second})
	c := m.collect(t)
	assert.EqualValues(t, 1, c.count(requests, ns("p"), result("miss")), "only the open Recorder's")
	n, _ := c.hist(loadDur, ns("p"), outcome("ok"))
	assert.EqualValues(t, 1, n, "a closed Recorder still records to histograms")
}

// TestZeroRecorder: a Recorder not made by New records nothing and does
// not crash the Cache it was given to.
func TestZeroRecorder(t *testing.T) {
	t.Parallel()
	var rec otelreadthrough.Recorder
	for _, e := range []rt.Event{{Kind: rt.EventHit}, {Kind: rt.EventLoad, Outcome: "ok"}, {Kind: rt.EventNearFlush, N: 3}} {
		assert.NotPanics(t, func() { rec.Record(e) })
	}
	assert.NoError(t, rec.Close())
}
