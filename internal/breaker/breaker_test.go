package breaker

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestOpensSkipsProbesCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(3, 5*time.Second, nil)
		for range 2 {
			if !b.Allow() {
				t.Fatal("closed breaker refused a call")
			}
			b.Done(Failure)
		}
		if b.IsOpen() {
			t.Fatal("opened before the threshold")
		}
		b.Allow()
		b.Done(Failure) // third in a row
		if !b.IsOpen() || b.Opens() != 1 {
			t.Fatalf("open=%v opens=%d after 3 failures", b.IsOpen(), b.Opens())
		}
		if b.Allow() {
			t.Fatal("open breaker let a call through")
		}
		time.Sleep(5 * time.Second)
		if !b.Allow() {
			t.Fatal("no probe after the cool-down")
		}
		if b.Allow() {
			t.Fatal("a second call went through while the probe is in flight")
		}
		b.Done(Failure) // the probe fails: open again for a full cool-down
		if b.Allow() || b.Opens() != 2 {
			t.Fatalf("failed probe: allow or opens=%d", b.Opens())
		}
		time.Sleep(5 * time.Second)
		if !b.Allow() {
			t.Fatal("no second probe")
		}
		b.Done(Success)
		if b.IsOpen() || !b.Allow() {
			t.Fatal("a successful probe did not close the breaker")
		}
	})
}

func TestSuccessResetsTheCount(t *testing.T) {
	b := New(2, time.Second, nil)
	b.Done(Failure)
	b.Done(Success)
	b.Done(Failure)
	if b.IsOpen() {
		t.Fatal("failures that were not consecutive opened the breaker")
	}
}

func TestIgnoredProbeLetsTheNextCallProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(1, time.Second, nil)
		b.Done(Failure)
		time.Sleep(time.Second)
		if !b.Allow() {
			t.Fatal("no probe")
		}
		b.Done(Ignored)
		if !b.Allow() {
			t.Fatal("an abandoned probe blocked the next one")
		}
	})
}

func TestNilAllows(t *testing.T) {
	var b *Breaker
	if !b.Allow() || b.IsOpen() {
		t.Fatal("nil breaker must allow")
	}
	b.Done(Failure)
}
