package redisstore

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/readthrough-go/readthrough/store"
	"github.com/redis/go-redis/v9"
)

// replyErr is an error reply, as go-redis types one.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

func TestErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		err                        error
		tooLarge, syntax, noscript bool
	}{
		{replyErr("ERR Protocol error: invalid bulk length"), true, false, false},
		{replyErr("ERR string exceeds maximum allowed size (proto-max-bulk-len)"), true, false, false},
		{fmt.Errorf("wrapped: %w", replyErr("ERR Protocol error: invalid bulk length")), true, false, false},
		{errors.New("ERR Protocol error: invalid bulk length"), false, false, false}, // not a reply
		{replyErr("ERR syntax error"), false, true, false},
		{replyErr("NOSCRIPT No matching script. Please use EVAL."), false, false, true},
		{redis.ErrNoScript, false, false, true},
		{redis.Nil, false, false, false},
		{io.EOF, false, false, false},
	} {
		if got := tooLarge(tc.err); got != tc.tooLarge {
			t.Errorf("tooLarge(%v) = %v", tc.err, got)
		}
		if got := syntaxError(tc.err); got != tc.syntax {
			t.Errorf("syntaxError(%v) = %v", tc.err, got)
		}
		if got := noScript(tc.err); got != tc.noscript {
			t.Errorf("noScript(%v) = %v", tc.err, got)
		}
	}
}

func TestFail(t *testing.T) {
	live := context.Background()
	if err := fail(live, "GET", replyErr("ERR Protocol error: invalid bulk length")); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("fail = %v, want ErrTooLarge", err)
	}
	timeout := errors.New("i/o timeout")
	if err := fail(live, "GET", timeout); !errors.Is(err, timeout) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("fail on a live context = %v", err)
	}
	// A socket deadline can fire a moment before the context's timer: the
	// deadline having passed is enough.
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := fail(past, "GET", timeout); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, timeout) {
		t.Errorf("fail past the deadline = %v, want both DeadlineExceeded and the cause", err)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := fail(cancelled, "GET", context.Canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("fail on a cancelled context = %v", err)
	}
}

func TestHonoursDeadlines(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client redis.UniversalClient
		want   bool
	}{
		{"Client", redis.NewClient(&redis.Options{}), false},
		{"ClientContextTimeout", redis.NewClient(&redis.Options{ContextTimeoutEnabled: true}), true},
		{"Failover", redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}, ContextTimeoutEnabled: true}), true},
		{"Ring", redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}}), false},
		{"RingContextTimeout", redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}, ContextTimeoutEnabled: true}), true},
		{"ClusterContextTimeout", redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, ContextTimeoutEnabled: true}), false},
	} {
		if got := honoursDeadlines(tc.client); got != tc.want {
			t.Errorf("%s: honoursDeadlines = %v, want %v", tc.name, got, tc.want)
		}
		_ = tc.client.Close()
	}
}

// TestCASArgs: up to 64 bytes old is sent as it is; above, as the SHA-1
// hex that redis.sha1hex computes, and the length. (The scripts' results
// for both are checked against a server in TestCompareAndSwap.)
func TestCASArgs(t *testing.T) {
	small := []byte(strings.Repeat("o", 64))
	if args := casArgs([]byte("v"), 5, small); !bytes.Equal(args[2].([]byte), small) || args[3] != "" {
		t.Errorf("casArgs of 64 bytes = %q", args)
	}
	large := []byte(strings.Repeat("o", 65))
	want := fmt.Sprintf("%x", sha1.Sum(large))
	if args := casArgs([]byte("v"), 5, large); args[2] != want || args[3] != "65" {
		t.Errorf("casArgs of 65 bytes = %q, want the SHA-1 %s and 65", args, want)
	}
}
