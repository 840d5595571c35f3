package otelreadthrough_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	rt "github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/otelreadthrough"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func newTracer(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, sr
}

// TestLoadSpans: with a TracerProvider, each load is a root span from
// now − Duration to now, named readthrough.load, with the namespace and
// outcome, and an error status and error.type when it failed.
func TestLoadSpans(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tp, sr := newTracer(t)
		m := newMeter(t, otelreadthrough.WithTracerProvider(tp))
		now := time.Now() // the bubble's clock stands still until a sleep
		for _, e := range []rt.Event{
			{Kind: rt.EventLoad, Namespace: "p", Outcome: "ok", Duration: 2 * time.Second},
			{Kind: rt.EventLoad, Namespace: "p", Outcome: "not-found", Duration: time.Second},
			{Kind: rt.EventLoad, Namespace: "p", Outcome: "error", Duration: time.Second, Err: fmt.Errorf("GET /products/1: %w", &replyError{"503"})},
			{Kind: rt.EventLoad, Namespace: "p", Outcome: "timeout", Duration: 30 * time.Second},
			{Kind: rt.EventLoad, Namespace: "p", Outcome: "panic"},
			{Kind: rt.EventLoad, Namespace: "p", Outcome: "exit"},
			{Kind: rt.EventHit, Namespace: "p"}, // not a load: no span
			{Kind: rt.EventStore, Namespace: "p", Op: "get", Duration: time.Second},
		} {
			m.rec.Record(e)
		}
		spans := sr.Ended()
		require.Len(t, spans, 6)
		for _, tt := range []struct {
			outcome   string
			took      time.Duration
			status    codes.Code
			desc      string
			errorType string
		}{
			{"ok", 2 * time.Second, codes.Unset, "", ""},
			{"not-found", time.Second, codes.Unset, "", ""},
			{"error", time.Second, codes.Error, "GET /products/1: 503", "*github.com/readthrough-go/readthrough/otelreadthrough_test.replyError"},
			{"timeout", 30 * time.Second, codes.Error, "timeout", "timeout"},
			{"panic", 0, codes.Error, "panic", "panic"},
			{"exit", 0, codes.Error, "exit", "exit"},
		} {
			s := spans[0]
			spans = spans[1:]
			assert.Equal(t, "readthrough.load", s.Name(), tt.outcome)
			assert.Equal(t, trace.SpanKindInternal, s.SpanKind(), tt.outcome)
			assert.False(t, s.Parent().IsValid(), "%s: a root span", tt.outcome)
			assert.Equal(t, otelreadthrough.ScopeName, s.InstrumentationScope().Name)
			assert.Equal(t, now.Add(-tt.took), s.StartTime(), tt.outcome)
			assert.Equal(t, now, s.EndTime(), tt.outcome)
			assert.Equal(t, tt.status, s.Status().Code, tt.outcome)
			assert.Equal(t, tt.desc, s.Status().Description, tt.outcome)
			want := []attribute.KeyValue{ns("p"), outcome(tt.outcome)}
			if tt.errorType != "" {
				want = append(want, errType(tt.errorType))
			}
			assert.ElementsMatch(t, want, s.Attributes(), tt.outcome)
		}
	})
}

// TestLoadSpansFromACache: a Cache's load, timed on the bubble's clock.
func TestLoadSpansFromACache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tp, sr := newTracer(t)
		m := newMeter(t, otelreadthrough.WithTracerProvider(tp))
		c := newCache(t, memstore.New(), &rt.Options[string, string]{Namespace: "product", Recorder: m.rec})
		slow := func(context.Context, string) (string, error) {
			time.Sleep(1500 * time.Millisecond)
			return "v", nil
		}
		for range 3 {
			_, err := c.GetOrLoad(context.Background(), "42", slow)
			require.NoError(t, err)
		}
		spans := sr.Ended()
		require.Len(t, spans, 1, "one load, one span; hits make none")
		assert.Equal(t, 1500*time.Millisecond, spans[0].EndTime().Sub(spans[0].StartTime()))
		assert.ElementsMatch(t, []attribute.KeyValue{ns("product"), outcome("ok")}, spans[0].Attributes())
	})
}

// TestNoSpansUnlessAsked: spans are off by default, even with a global
// TracerProvider set.
func TestNoSpansUnlessAsked(t *testing.T) {
	// Not parallel: it sets the global TracerProvider.
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	tp, sr := newTracer(t)
	otel.SetTracerProvider(tp)
	for _, opts := range [][]otelreadthrough.Option{nil, {otelreadthrough.WithTracerProvider(nil)}} {
		m := newMeter(t, opts...)
		m.rec.Record(rt.Event{Kind: rt.EventLoad, Namespace: "p", Outcome: "error", Duration: time.Second})
		n, _ := m.collect(t).hist(loadDur, ns("p"), outcome("error"))
		assert.EqualValues(t, 1, n, "the metric is still recorded")
	}
	assert.Empty(t, sr.Ended())
}
