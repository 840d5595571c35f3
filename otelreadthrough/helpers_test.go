package otelreadthrough_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/readthrough-go/readthrough/otelreadthrough"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// meter is a Recorder on an SDK MeterProvider whose metrics the test
// reads through a ManualReader.
type meter struct {
	rec      *otelreadthrough.Recorder
	reader   *sdkmetric.ManualReader
	provider *sdkmetric.MeterProvider
}

func newMeter(t testing.TB, opts ...otelreadthrough.Option) *meter {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	rec, err := otelreadthrough.New(append([]otelreadthrough.Option{otelreadthrough.WithMeterProvider(mp)}, opts...)...)
	require.NoError(t, err)
	return &meter{rec: rec, reader: reader, provider: mp}
}

// collected is one collection: every data point of every instrument.
type collected struct {
	t  testing.TB
	rm metricdata.ResourceMetrics
}

func (m *meter) collect(t testing.TB) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, m.reader.Collect(context.Background(), &rm))
	return collected{t: t, rm: rm}
}

func (c collected) metric(name string) (metricdata.Metrics, bool) {
	for _, sm := range c.rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// count is the value of counter name at exactly the attributes kvs; zero
// when there is no such point.
func (c collected) count(name string, kvs ...attribute.KeyValue) int64 {
	c.t.Helper()
	m, ok := c.metric(name)
	if !ok {
		return 0
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(c.t, ok, "%s is a %T, not an int64 sum", name, m.Data)
	require.True(c.t, sum.IsMonotonic, "%s is a counter", name)
	want := attribute.NewSet(kvs...)
	for _, dp := range sum.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value
		}
	}
	return 0
}

// total is the sum of counter name over every attribute set.
func (c collected) total(name string) int64 {
	c.t.Helper()
	m, ok := c.metric(name)
	if !ok {
		return 0
	}
	var n int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		n += dp.Value
	}
	return n
}

// hist is the count and sum of histogram name at exactly kvs.
func (c collected) hist(name string, kvs ...attribute.KeyValue) (uint64, float64) {
	c.t.Helper()
	m, ok := c.metric(name)
	if !ok {
		return 0, 0
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	require.True(c.t, ok, "%s is a %T, not a float64 histogram", name, m.Data)
	want := attribute.NewSet(kvs...)
	for _, dp := range h.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Count, dp.Sum
		}
	}
	return 0, 0
}

// lines renders every data point as "name{k=v,...} value" (a histogram's
// value as "count=N sum=S"), sorted, so a test can compare everything
// that was recorded, and nothing else.
func (c collected) lines() []string {
	var out []string
	for _, sm := range c.rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, fmt.Sprintf("%s{%s} %d", m.Name, attrs(dp.Attributes), dp.Value))
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out = append(out, fmt.Sprintf("%s{%s} count=%d sum=%g", m.Name, attrs(dp.Attributes), dp.Count, dp.Sum))
				}
			default:
				out = append(out, fmt.Sprintf("%s: unexpected %T", m.Name, m.Data))
			}
		}
	}
	slices.Sort(out)
	return out
}

func attrs(s attribute.Set) string {
	var b strings.Builder
	for i, kv := range s.ToSlice() {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%s", kv.Key, kv.Value.String())
	}
	return b.String()
}

// Attribute shorthands.
func ns(v string) attribute.KeyValue      { return attribute.String("readthrough.namespace", v) }
func result(v string) attribute.KeyValue  { return attribute.String("readthrough.result", v) }
func source(v string) attribute.KeyValue  { return attribute.String("readthrough.source", v) }
func notFound(v bool) attribute.KeyValue  { return attribute.Bool("readthrough.not_found", v) }
func outcome(v string) attribute.KeyValue { return attribute.String("readthrough.outcome", v) }
func op(v string) attribute.KeyValue      { return attribute.String("readthrough.operation", v) }
func state(v string) attribute.KeyValue   { return attribute.String("readthrough.state", v) }
func reason(v string) attribute.KeyValue  { return attribute.String("readthrough.reason", v) }
func errType(v string) attribute.KeyValue { return attribute.String("error.type", v) }

// Instrument names.
const (
	requests  = "readthrough.requests"
	loadDur   = "readthrough.load.duration"
	storeDur  = "readthrough.store.operation.duration"
	waitDur   = "readthrough.lock.wait.duration"
	breaker   = "readthrough.breaker.transitions"
	evictions = "readthrough.near.evictions"
	flushes   = "readthrough.near.flushes"
)
