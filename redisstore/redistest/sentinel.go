package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a Sentinel deployment on loopback: a master, one replica and
// one Sentinel (quorum 1) watching them, for tests of failover. Point a
// redis.NewFailoverClient at Addr with MasterName.
type Sentinel struct {
	// Addr is the Sentinel's address.
	Addr string
	// MasterName is the name the Sentinel monitors the master by.
	MasterName string

	cmd *exec.Cmd
	dir string
}

// StartSentinel starts a master, a replica of it and a Sentinel, waits
// until the Sentinel knows the replica (so it can fail over), and stops
// them all when t ends. Without redis-sentinel on PATH it skips t, or
// fails it when RequireEnv=1.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	if _, err := exec.LookPath("redis-sentinel"); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("redis-sentinel not found and %s=1: %v", RequireEnv, err)
		}
		t.Skipf("redis-sentinel not installed; skipping: %v", err)
	}
	master := Start(t)
	replica := Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.port))
	waitFor(t, 10*time.Second, "replica in sync", func() bool {
		info, err := infoOf(replica.Addr, "replication")
		return err == nil && strings.Contains(info, "master_link_status:up")
	})

	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Sentinel{Addr: "127.0.0.1:" + strconv.Itoa(port), MasterName: "mymaster", dir: dir}
	conf := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
dir %s
sentinel monitor %s 127.0.0.1 %d 1
sentinel down-after-milliseconds %[3]s 1000
sentinel failover-timeout %[3]s 5000
sentinel parallel-syncs %[3]s 1
`, port, dir, s.MasterName, master.port)
	path := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command("redis-sentinel", path)
	s.cmd.Dir = dir
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start redis-sentinel: %v", err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	})
	waitFor(t, 20*time.Second, "the Sentinel to know the replica", func() bool {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
		defer c.Close()
		replicas, err := c.Replicas(context.Background(), s.MasterName).Result()
		return err == nil && len(replicas) > 0 && replicas[0]["flags"] == "slave"
	})
	return s
}

// Master returns the address of the current master, as the Sentinel says.
func (s *Sentinel) Master(t testing.TB) string {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	addr, err := c.GetMasterAddrByName(context.Background(), s.MasterName).Result()
	if err != nil {
		t.Fatal(err)
	}
	return addr[0] + ":" + addr[1]
}

// Failover makes the Sentinel promote the replica (SENTINEL FAILOVER) and
// waits until the new master is one: the Sentinel names it and it answers
// ROLE as a master.
func (s *Sentinel) Failover(t testing.TB) {
	t.Helper()
	old := s.Master(t)
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	if err := c.Failover(context.Background(), s.MasterName).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	waitFor(t, 20*time.Second, "the failover", func() bool {
		addr := s.Master(t)
		if addr == old {
			return false
		}
		info, err := infoOf(addr, "replication")
		return err == nil && strings.Contains(info, "role:master")
	})
}

func infoOf(addr, section string) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	return c.Info(context.Background(), section).Result()
}

func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("redistest: waiting for %s: not within %v", what, limit)
		}
	}
}
