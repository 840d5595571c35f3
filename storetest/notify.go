package storetest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/store"
)

// The tests of store.Notifier. They wait for what a listener is told on a
// channel with a deadline, never for a fixed time, so an in-process store
// passes at once and a remote one has the time it needs.

const (
	// notifyTimeout bounds the wait for Connected and for the report of a
	// write: a remote store connects and delivers in the background.
	notifyTimeout = 5 * time.Second
	// expiryTimeout bounds the wait for the report of an expiry: a server
	// may find expired keys only in its periodic sweep.
	expiryTimeout = 15 * time.Second
)

// recorder is a [store.Listener] that records what it is told.
type recorder struct {
	prefix string
	wake   chan struct{} // a token after each call, for wait

	mu        sync.Mutex
	connected int
	complete  bool
	disconns  []error
	changed   map[string]int
	stray     []string // reported keys outside prefix
	stopped   bool     // stop has returned
	lateCalls []string // calls made after that
}

func newRecorder(prefix string) *recorder {
	return &recorder{prefix: prefix, wake: make(chan struct{}, 1), changed: map[string]int{}}
}

func (r *recorder) record(call string, fn func()) {
	r.mu.Lock()
	if r.stopped {
		r.lateCalls = append(r.lateCalls, call)
	}
	fn()
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) Connected(complete bool) {
	r.record(fmt.Sprintf("Connected(%v)", complete), func() { r.connected++; r.complete = complete })
}

func (r *recorder) Changed(key string) {
	r.record(fmt.Sprintf("Changed(%q)", key), func() {
		if !strings.HasPrefix(key, r.prefix) {
			r.stray = append(r.stray, key)
		}
		r.changed[key]++
	})
}

func (r *recorder) Disconnected(err error) {
	r.record(fmt.Sprintf("Disconnected(%v)", err), func() { r.disconns = append(r.disconns, err) })
}

// count returns how many times key was reported changed.
func (r *recorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed[key]
}

// wait returns once cond holds, and fails the test if it does not within
// timeout.
func (r *recorder) wait(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.wake:
		case <-timer.C:
			r.mu.Lock()
			ok := cond()
			r.mu.Unlock()
			if !ok {
				t.Fatalf("%s: not within %v", what, timeout)
			}
			return
		}
	}
}

func (r *recorder) waitConnected(t *testing.T) {
	t.Helper()
	r.wait(t, notifyTimeout, "the listener was not told Connected", func() bool { return r.connected > 0 })
	r.mu.Lock()
	t.Logf("Connected(complete %v)", r.complete)
	r.mu.Unlock()
}

// waitChanged waits until key has been reported more than n times.
func (r *recorder) waitChanged(t *testing.T, timeout time.Duration, key string, n int, what string) {
	t.Helper()
	r.wait(t, timeout, fmt.Sprintf("%s was not reported as Changed(%q)", what, key), func() bool { return r.changed[key] > n })
}

// checkClean fails the test for reports outside the prefix or after stop.
func (r *recorder) checkClean(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.stray) > 0 {
		t.Errorf("a listener for prefix %q was told of keys outside it: %q", r.prefix, r.stray)
	}
	if len(r.lateCalls) > 0 {
		t.Errorf("a listener was called after stop returned: %q", r.lateCalls)
	}
	r.stray, r.lateCalls = nil, nil // each reported once
}

func (r *recorder) markStopped() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
}

// notifierOf skips the test when s cannot notify.
func notifierOf(t *testing.T, s readthrough.Store) store.Notifier {
	t.Helper()
	n, ok := s.(store.Notifier)
	if !ok {
		t.Skip("store does not implement store.Notifier")
	}
	return n
}

// listen registers a recorder for prefix, waits for it to be connected,
// and stops it when the test ends (unless the test stops it first).
func listen(t *testing.T, n store.Notifier, prefix string) (*recorder, func()) {
	t.Helper()
	r := newRecorder(prefix)
	stop, err := n.Notify(prefix, r)
	skipUnsupported(t, "Notify", err)
	if err != nil {
		t.Fatalf("Notify(%q): %v", prefix, err)
	}
	var once sync.Once
	stopOnce := func() { once.Do(func() { stop(); r.markStopped() }) }
	t.Cleanup(func() { r.checkClean(t) })
	t.Cleanup(stopOnce) // runs first
	r.waitConnected(t)
	return r, stopOnce
}

func testNotifyConnected(t *testing.T, e *env) {
	n := notifierOf(t, e.s)
	listen(t, n, e.key(""))
}

// checkChanges makes each kind of change through w and waits for r to be
// told of each.
func checkChanges(t *testing.T, w readthrough.Store, r *recorder, key func(string) string) {
	t.Helper()
	changed := func(what, k string, write func() error) {
		t.Helper()
		n := r.count(k)
		if err := write(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		r.waitChanged(t, notifyTimeout, k, n, what)
	}
	k := key("k")
	changed("Set", k, func() error { return w.Set(ctx(t), k, []byte("v1"), time.Minute) })
	changed("an overwrite", k, func() error { return w.Set(ctx(t), k, []byte("v2"), time.Minute) })
	changed("Delete", k, func() error { return w.Delete(ctx(t), k) })
	changed("a SetIfAbsent that stored", k, func() error {
		ok, err := w.SetIfAbsent(ctx(t), k, []byte("v3"), time.Minute)
		if err == nil && !ok {
			err = fmt.Errorf("SetIfAbsent on an absent key did not store")
		}
		return err
	})
	if cas, ok := w.(store.CompareAndSwapper); ok {
		n := r.count(k)
		swapped, err := cas.CompareAndSwap(ctx(t), k, []byte("v3"), []byte("v4"), time.Minute)
		switch {
		case isUnsupported(err):
		case err != nil || !swapped:
			t.Fatalf("CompareAndSwap = %v, %v; want true, nil", swapped, err)
		default:
			r.waitChanged(t, notifyTimeout, k, n, "a CompareAndSwap that swapped")
		}
	}
}

func testNotifyChanges(t *testing.T, e *env) {
	n := notifierOf(t, e.s)
	r, _ := listen(t, n, e.key("in:"))
	checkChanges(t, e.s, r, func(k string) string { return e.key("in:" + k) })
}

// testNotifyPeerChanges: another client's writes are reported too, which
// only a second store value over the same server can show.
func testNotifyPeerChanges(t *testing.T, e *env) {
	if e.peer == nil {
		t.Skip("no Options.NewPeer: changes by another client are not checked")
	}
	n := notifierOf(t, e.s)
	r, _ := listen(t, n, e.key("in:"))
	checkChanges(t, e.peer(), r, func(k string) string { return e.key("in:" + k) })
}

// testNotifyPrefix: keys outside the prefix are not reported. Each is
// written before a key inside it, whose report is waited for: a store
// reports one client's writes in order, so by then an outside report
// would have come.
func testNotifyPrefix(t *testing.T, e *env) {
	n := notifierOf(t, e.s)
	r, _ := listen(t, n, e.key("in:"))
	writers := []readthrough.Store{e.s}
	if e.peer != nil {
		writers = append(writers, e.peer())
	}
	for i, w := range writers {
		for _, k := range []string{e.key("out:k"), e.key("i"), e.key("in"), e.key("")} {
			mustSet(t, w, k, []byte("v"), time.Minute)
			if err := w.Delete(ctx(t), k); err != nil {
				t.Fatal(err)
			}
		}
		marker := e.key(fmt.Sprintf("in:marker%d", i))
		mustSet(t, w, marker, []byte("v"), time.Minute)
		r.waitChanged(t, notifyTimeout, marker, 0, "a Set")
	}
	r.checkClean(t)
}

// testNotifyOverlapping: two registrations whose prefixes overlap both get
// the changes under their prefix.
func testNotifyOverlapping(t *testing.T, e *env) {
	n := notifierOf(t, e.s)
	narrow, _ := listen(t, n, e.key("a:"))
	wide, _ := listen(t, n, e.key(""))
	same, _ := listen(t, n, e.key("a:"))
	mustSet(t, e.s, e.key("a:k"), []byte("v"), time.Minute)
	for _, r := range []*recorder{narrow, wide, same} {
		r.waitChanged(t, notifyTimeout, e.key("a:k"), 0, "a Set under both prefixes")
	}
	mustSet(t, e.s, e.key("b:k"), []byte("v"), time.Minute)
	wide.waitChanged(t, notifyTimeout, e.key("b:k"), 0, "a Set under the wider prefix")
	// Reported to wide, so narrow would have had it by now.
	mustSet(t, e.s, e.key("a:marker"), []byte("v"), time.Minute)
	narrow.waitChanged(t, notifyTimeout, e.key("a:marker"), 0, "a Set")
	narrow.checkClean(t)
}

// testNotifyExpiry: an expiry is a change. A store that drops expired
// entries only when touched may report it then, so the key is read after
// its TTL before the wait. A store that reports only the changes made
// through stores that publish them (Connected(false): Momento topics) is
// not held to it: no one publishes an expiry.
func testNotifyExpiry(t *testing.T, e *env) {
	n := notifierOf(t, e.s)
	r, _ := listen(t, n, e.key(""))
	r.mu.Lock()
	complete := r.complete
	r.mu.Unlock()
	if !complete {
		t.Skip("the store reports Connected(false): only published changes, and nothing publishes an expiry")
	}
	k := e.key("expiring")
	mustSet(t, e.s, k, []byte("v"), ttl)
	r.waitChanged(t, notifyTimeout, k, 0, "a Set")
	before := r.count(k) // a store that expires actively may report it during the sleep
	time.Sleep(ttl + 200*time.Millisecond)
	wantMiss(t, e.s, k)
	r.waitChanged(t, expiryTimeout, k, before, "an expiry")
}

// testNotifyStop: once stop returns, the listener is never called again,
// whatever changes follow.
func testNotifyStop(t *testing.T, e *env) {
	n := notifierOf(t, e.s)
	stopped, stop := listen(t, n, e.key(""))
	stop()
	for i := range 10 {
		k := e.key(fmt.Sprintf("k%d", i))
		mustSet(t, e.s, k, []byte("v"), time.Minute)
		if err := e.s.Delete(ctx(t), k); err != nil {
			t.Fatal(err)
		}
	}
	// A second listener sees a later change: a remote store would have
	// delivered any report for the first by then.
	r, _ := listen(t, n, e.key(""))
	mustSet(t, e.s, e.key("marker"), []byte("v"), time.Minute)
	r.waitChanged(t, notifyTimeout, e.key("marker"), 0, "a Set")
	stopped.checkClean(t)
}
