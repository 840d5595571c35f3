package bench

import "testing"

// BenchmarkMemHit: the in-memory hit path of readthrough, its floor and
// its peers, for benchstat.
func BenchmarkMemHit(b *testing.B) {
	cases, err := MemHitCases()
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range cases {
		b.Run(c.ID, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMemHitCasesHit: every contender is warmed up and hits, so the
// benchmarks measure hits, not loads.
func TestMemHitCasesHit(t *testing.T) {
	cases, err := MemHitCases()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		for range 3 {
			if err := c.Op(); err != nil {
				t.Errorf("%s: %v", c.Name, err)
			}
		}
	}
}
