package bench

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/otelreadthrough"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// CountingRecorder counts events by kind with one atomic add each: the
// least a Recorder can do.
type CountingRecorder struct {
	n [16]atomic.Uint64
}

// Record implements readthrough.Recorder.
func (r *CountingRecorder) Record(e readthrough.Event) { r.n[e.Kind&15].Add(1) }

// Count returns how many events of kind were recorded.
func (r *CountingRecorder) Count(kind readthrough.EventKind) uint64 { return r.n[kind&15].Load() }

// RecorderCases returns the hit path, near and store (memstore), with no
// Recorder, with a CountingRecorder, and with otelreadthrough on an SDK
// MeterProvider (a ManualReader that is never collected: the cost of
// recording, the export aside). close shuts the MeterProviders down.
func RecorderCases() (cases []Case, close func(), err error) {
	ctx := context.Background()
	var providers []*sdkmetric.MeterProvider
	close = func() {
		for _, mp := range providers {
			_ = mp.Shutdown(ctx)
		}
	}
	recorders := []struct {
		id, name string
		make     func() (readthrough.Recorder, error)
	}{
		{"none", "no Recorder", func() (readthrough.Recorder, error) { return nil, nil }},
		{"counting", "counting Recorder (an atomic add per event)", func() (readthrough.Recorder, error) { return &CountingRecorder{}, nil }},
		{"otel-sdk", "otelreadthrough on an SDK MeterProvider", func() (readthrough.Recorder, error) {
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			providers = append(providers, mp)
			return otelreadthrough.New(otelreadthrough.WithMeterProvider(mp))
		}},
	}
	for _, near := range []bool{true, false} {
		for _, rc := range recorders {
			rec, err := rc.make()
			if err != nil {
				close()
				return nil, nil, err
			}
			opts := &readthrough.Options[int, Product]{Namespace: "product", TTL: time.Hour, Recorder: rec}
			where, id := "store hit", "store/"
			if near {
				opts.Near = readthrough.NearOptions{MaxEntries: 10_000}
				where, id = "near hit", "near/"
			}
			c, err := readthrough.New[int, Product](memstore.New(), opts)
			if err != nil {
				close()
				return nil, nil, err
			}
			if near {
				err = WarmNear(c, 42)
			} else {
				_, err = c.GetOrLoad(ctx, 42, func(context.Context, int) (Product, error) { return Sample, nil })
			}
			if err != nil {
				close()
				return nil, nil, err
			}
			cases = append(cases, Case{id + rc.id, where + ", " + rc.name, "", func() error {
				_, err := c.GetOrLoad(ctx, 42, missLoader)
				return err
			}})
		}
	}
	return cases, close, nil
}
