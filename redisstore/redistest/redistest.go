// Package redistest runs throwaway redis-servers on loopback: for tests of
// code that uses redisstore (yours and ours), and for programs such as
// benchmarks that need a real server. Like net/http/httptest, the fake is
// the real thing, on a free port, with no persistence.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RequireEnv names the variable that turns a missing redis-server from a
// skip into a failure; CI sets it.
const RequireEnv = "READTHROUGH_REQUIRE_REDIS"

// Server is a redis-server child process with no persistence.
type Server struct {
	Addr string
	dir  string
	port int
	cmd  *exec.Cmd
}

// Start starts a server on a free loopback port and stops it when t ends.
// Extra args go to redis-server. Without redis-server on PATH it skips t,
// or fails it when RequireEnv=1.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("redis-server not found and %s=1: %v", RequireEnv, err)
		}
		t.Skipf("redis-server not installed (apt-get install redis-server); skipping: %v", err)
	}
	s, err := StartServer(args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartServer starts a server on a free loopback port, for programs; Stop
// it when done. Extra args go to redis-server.
func StartServer(args ...string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redistest")
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, port: port}
	if err := s.start(args...); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Server) start(extra ...string) error {
	args := append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
	}, extra...)
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	s.cmd = exec.Command("redis-server", args...)
	s.cmd.Dir = s.dir
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	return s.waitReady(10 * time.Second)
}

func (s *Server) waitReady(limit time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(limit)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready after %v: %w", s.Addr, limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server, waits for it to exit, and removes its directory.
// It is safe to call twice.
func (s *Server) Stop() {
	s.kill()
	_ = os.RemoveAll(s.dir)
}

func (s *Server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart kills the server and starts it again on the same port, empty:
// an outage and a recovery.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.kill()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

// Client returns a client for the server, closed when t ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Barrier blocks until n processes have called it with the same key, so
// that workers in separate processes start a burst at the same moment. It
// gives up after timeout.
func Barrier(ctx context.Context, rdb redis.Cmdable, key string, n int, timeout time.Duration) error {
	if err := rdb.Incr(ctx, key).Err(); err != nil {
		return err
	}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Microsecond) {
		if got, err := rdb.Get(ctx, key).Int(); err != nil || got >= n {
			return err
		}
	}
	return fmt.Errorf("redistest: barrier %s: fewer than %d arrivals after %v", key, n, timeout)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// StartCluster starts n cluster-enabled servers and joins them into one
// cluster with no replicas (redis-cli --cluster create). It returns their
// addresses once the cluster reports ok.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("redis-cli not found and %s=1: %v", RequireEnv, err)
		}
		t.Skipf("redis-cli not installed; skipping: %v", err)
	}
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000").Addr
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		for _, a := range addrs {
			node := redis.NewClient(&redis.Options{Addr: a})
			info, err := node.ClusterInfo(context.Background()).Result()
			node.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				ok = false
			}
		}
		if ok {
			return addrs
		}
		if time.Now().After(deadline) {
			t.Fatal("cluster not ok after 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
