package redisstore

import (
	"context"
	"testing"
	"time"
)

func TestRoundTTL(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{time.Millisecond, time.Millisecond},
		{1500 * time.Microsecond, 2 * time.Millisecond}, // up, never down to a shorter life
		{time.Second + time.Nanosecond, time.Second + time.Millisecond},
		{time.Hour, time.Hour},
	} {
		got, err := roundTTL(context.Background(), tc.in)
		if err != nil || got != tc.want {
			t.Errorf("roundTTL(%v) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
