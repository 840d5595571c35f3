package momentostore_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/momentohq/client-sdk-go/config"
	"github.com/momentohq/client-sdk-go/config/logger"
	"github.com/momentohq/client-sdk-go/momento"
	"github.com/readthrough-go/readthrough/momentostore"
	"github.com/readthrough-go/readthrough/momentostore/internal/fakemomento"
	"github.com/stretchr/testify/require"
)

// cacheName is the cache every test's fake service holds.
const cacheName = "c"

// failsafe bounds every wait for something the service or a subscription
// will do: a test that reaches it has failed, it does not time anything.
const failsafe = 20 * time.Second

// testConfig is the SDK's in-region configuration with consistent reads,
// and a client timeout that a loaded machine running the race detector
// over multi-megabyte messages cannot reach (in-region's is 1.1 s).
func testConfig() config.Configuration {
	return config.InRegionLatestWithLogger(logger.NewNoopMomentoLoggerFactory()).
		WithReadConcern(config.CONSISTENT).
		WithClientTimeout(failsafe)
}

// connect opens a Store on srv through the real SDK, and closes it when
// the test ends. nil opts use testConfig.
func connect(t *testing.T, srv *fakemomento.Server, opts *momentostore.Options) *momentostore.Store {
	t.Helper()
	if opts == nil {
		opts = &momentostore.Options{Configuration: testConfig()}
	}
	s, err := momentostore.Connect(t.Context(), cacheName, srv.Credentials(), opts)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// client makes an SDK cache client for srv, with consistent reads, closed
// when the test ends.
func client(t *testing.T, srv *fakemomento.Server) momento.CacheClient {
	t.Helper()
	c, err := momento.NewCacheClient(testConfig(), srv.Credentials(), time.Minute)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// recorder is a store.Listener that keeps what it is told, in order.
type recorder struct {
	mu     sync.Mutex
	events []string
	ch     chan string
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 10_000)} }

func (r *recorder) push(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	r.ch <- e
}

func (r *recorder) Connected(complete bool) { r.push(fmt.Sprintf("connected:%v", complete)) }
func (r *recorder) Changed(key string)      { r.push("changed:" + key) }
func (r *recorder) Disconnected(err error) {
	if err == nil {
		r.push("disconnected:<nil error>")
		return
	}
	r.push("disconnected")
}

// all returns every event so far.
func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// next returns the events that arrive up to and including want, failing
// the test if want never comes.
func (r *recorder) next(t *testing.T, want string) []string {
	t.Helper()
	var seen []string
	timeout := time.After(failsafe)
	for {
		select {
		case e := <-r.ch:
			seen = append(seen, e)
			if e == want {
				return seen
			}
		case <-timeout:
			t.Fatalf("never told %q; told %q", want, seen)
		}
	}
}

// goroutines counts the goroutines whose stack mentions fn.
func goroutines(fn string) int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// eventually polls cond until it holds, failing after failsafe.
func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	for deadline := time.Now().Add(failsafe); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
	}
}
