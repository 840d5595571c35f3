package otelreadthrough_test

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/otelreadthrough"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// A Cache that reports to OpenTelemetry. Here the metrics are read back
// through a ManualReader; in a service the MeterProvider would have a
// periodic reader and an OTLP or Prometheus exporter.
func Example() {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)

	rec, err := otelreadthrough.New(otelreadthrough.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	products, err := readthrough.New[int, string](memstore.New(), &readthrough.Options[int, string]{
		Namespace: "product",
		Near:      readthrough.NearOptions{MaxEntries: 1000},
		Recorder:  rec,
	})
	if err != nil {
		panic(err)
	}
	defer products.Close()
	lookup := func(ctx context.Context, id int) (string, error) { return fmt.Sprint("product ", id), nil }

	// A load (whose process keeps the value it wrote as a near copy),
	// then near hits.
	for range 4 {
		if _, err := products.GetOrLoad(ctx, 42, lookup); err != nil {
			panic(err)
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	var lines []string
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == "readthrough.store.operation.duration" {
			continue // which store calls a hit makes is the cache's business
		}
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, dp := range d.DataPoints {
				lines = append(lines, fmt.Sprintf("%s %s = %d", m.Name, show(dp.Attributes), dp.Value))
			}
		case metricdata.Histogram[float64]: // durations vary: print counts only
			for _, dp := range d.DataPoints {
				lines = append(lines, fmt.Sprintf("%s %s: %d recorded", m.Name, show(dp.Attributes), dp.Count))
			}
		}
	}
	slices.Sort(lines)
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// readthrough.load.duration outcome=ok: 1 recorded
	// readthrough.requests result=hit source=near = 3
	// readthrough.requests result=miss = 1
}

// show prints the attributes that vary, without their prefix: the
// namespace is "product" throughout, and not_found false.
func show(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		k := strings.TrimPrefix(string(kv.Key), "readthrough.")
		if k == "namespace" || k == "not_found" && !kv.Value.AsBool() {
			continue
		}
		parts = append(parts, k+"="+kv.Value.String())
	}
	return strings.Join(parts, " ")
}
