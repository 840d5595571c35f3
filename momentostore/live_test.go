package momentostore_test

// Tests against the real Momento service. They run only with
// MOMENTO_API_KEY set (and MOMENTO_ENDPOINT for a v2 key); the cache
// MOMENTO_TEST_CACHE (default "readthrough-test") is created if missing.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/momentostore"
	"github.com/readthrough-go/readthrough/storetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const liveWorkerEnv = "READTHROUGH_MOMENTO_WORKER"

func TestMain(m *testing.M) {
	if key := os.Getenv(liveWorkerEnv); key != "" {
		os.Exit(liveWorker(key))
	}
	os.Exit(m.Run())
}

func liveCache() string {
	if c := os.Getenv("MOMENTO_TEST_CACHE"); c != "" {
		return c
	}
	return "readthrough-test"
}

func openLive(t *testing.T) *momentostore.Store {
	t.Helper()
	if os.Getenv("MOMENTO_API_KEY") == "" {
		t.Skip("MOMENTO_API_KEY is not set: skipping the tests against the live Momento service")
	}
	s, err := momentostore.Open(t.Context(), liveCache(), nil)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func TestLiveConformance(t *testing.T) {
	s := openLive(t)
	storetest.RunWithOptions(t, func(*testing.T) readthrough.Store { return s },
		storetest.Options{NewPeer: func(t *testing.T, _ readthrough.Store) readthrough.Store { return openLive(t) }})
}

// TestLiveStampedeTwoProcesses: two processes, 16 goroutines each, one cold
// key; the loader records its calls in the cache itself (SetIfAbsent of a
// per-call marker), so the count spans both processes.
func TestLiveStampedeTwoProcesses(t *testing.T) {
	s := openLive(t)
	key := fmt.Sprintf("stampede-%d", time.Now().UnixNano())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), liveWorkerEnv+"="+key)
			out, err := cmd.CombinedOutput()
			assert.NoError(t, err, "worker: %s", out)
		})
	}
	wg.Wait()
	loads := 0
	for i := range 32 {
		if _, ok, err := s.Get(t.Context(), fmt.Sprintf("%s:load:%d", key, i)); err == nil && ok {
			loads++
		}
	}
	assert.Equal(t, 1, loads, "loads across two processes")
}

func liveWorker(key string) int {
	ctx := context.Background()
	s, err := momentostore.Open(ctx, liveCache(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer s.Close()
	c, err := readthrough.New[string, string](s, &readthrough.Options[string, string]{Namespace: "rt-live"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	load := func(ctx context.Context, k string) (string, error) {
		// Claim the first free load slot: a count that spans processes.
		for i := 0; ; i++ {
			ok, err := s.SetIfAbsent(ctx, fmt.Sprintf("%s:load:%d", key, i), []byte(fmt.Sprint(os.Getpid())), time.Minute)
			if err != nil {
				return "", err
			}
			if ok {
				break
			}
		}
		time.Sleep(300 * time.Millisecond)
		return strings.ToUpper(k), nil
	}
	var wg sync.WaitGroup
	failed := false
	var mu sync.Mutex
	for range 16 {
		wg.Go(func() {
			v, err := c.GetOrLoad(ctx, key, load)
			if err != nil || v != strings.ToUpper(key) {
				mu.Lock()
				failed = true
				mu.Unlock()
				fmt.Fprintln(os.Stderr, "GetOrLoad:", v, err)
			}
		})
	}
	wg.Wait()
	if failed {
		return 1
	}
	return 0
}
