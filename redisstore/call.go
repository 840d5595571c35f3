package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/readthrough-go/readthrough/store"
	"github.com/redis/go-redis/v9"
)

// This file bounds every command by its caller's context, whatever client
// the user built.
//
// go-redis sets its socket deadlines from ReadTimeout and WriteTimeout
// alone unless the client has ContextTimeoutEnabled, which is off by
// default: a server that accepts a command and never answers holds the
// caller for ReadTimeout, once per retry, however short its context. So
// unless the client is known to bound its sockets by the context's
// deadline, the command runs on a goroutine of its own and the caller
// returns at ctx.Done. The command goes on, on the user's client, until
// go-redis's own timeout ends it; it stops retrying then, since its
// context is done, and its connection is closed or returned to the pool.

// maxAbandoned is how many commands may still be running after their
// callers returned before calls fail at once with [ErrBacklog]. For a
// *redis.Client the pool caps them near PoolSize anyway (calls waiting for
// a connection leave with their context); the cap is for clients whose
// waits ignore the context, such as a ClusterClient fetching COMMAND
// under a lock, where each call would otherwise leave a goroutine behind
// for seconds.
const maxAbandoned = 1024

// ErrBacklog is returned, wrapped, by a call made while too many earlier
// commands are still running after their callers gave up on them: the
// server is not answering, and a new command would only wait out its
// context too. It matches neither context error; the cache counts it as a
// store failure and serves the caller from the loader.
var ErrBacklog = errors.New("redisstore: too many commands still waiting on the server after their callers gave up")

// honoursDeadlines reports whether c bounds every socket read and write by
// the context's deadline, so a command can run on the caller's goroutine.
// Only clients whose code we have read qualify: *redis.Client (single node
// or Sentinel failover) and *redis.Ring, with ContextTimeoutEnabled. Not
// *redis.ClusterClient: even with ContextTimeoutEnabled it fetches the
// COMMAND table, until that first succeeds, under a 5 s timeout of its own
// that ignores the caller's context (go-redis v9.23, osscluster.go
// cmdInfo). Unknown types may wrap anything, so they get the goroutine.
func honoursDeadlines(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// inline reports whether a command may run on the caller's goroutine: its
// context can never end, or the client bounds the socket by its deadline.
// With ContextTimeoutEnabled a cancel before the deadline reaches no
// socket, so the call returns at the deadline at the latest.
func (s *Store) inline(ctx context.Context) bool {
	if ctx.Done() == nil {
		return true
	}
	if s.direct {
		_, ok := ctx.Deadline()
		return ok
	}
	return false
}

// process runs cmd on the user's client, bounded by ctx. A nil error
// means cmd carries the outcome; otherwise cmd must not be read.
func (s *Store) process(ctx context.Context, cmd redis.Cmder) error {
	if s.inline(ctx) {
		_ = s.client.Process(ctx, cmd)
		return nil
	}
	return s.spawn(ctx, func(ctx context.Context) { _ = s.client.Process(ctx, cmd) })
}

// run runs fn, which issues commands on the user's client, bounded by
// ctx. A nil error means fn returned; otherwise nothing fn writes may be
// read, as fn may still be running.
func (s *Store) run(ctx context.Context, fn func(context.Context)) error {
	if s.inline(ctx) {
		fn(ctx)
		return nil
	}
	return s.spawn(ctx, fn)
}

// The states of a spawned call; whoever moves it out of running first
// decides whether the caller gets the outcome.
const (
	running int32 = iota
	finished
	abandoned
)

// call is one command running on a goroutine of its own.
type call struct {
	state    atomic.Int32
	done     chan struct{} // closed when fn has ended and the caller may read
	returned bool          // fn returned (not a panic, not runtime.Goexit)
	panicked any           // what fn panicked with, for the caller to re-panic
}

// spawn runs fn on a new goroutine and waits for it or for ctx, whichever
// comes first. A panic in fn is re-raised in the caller's goroutine, never
// left to crash the process; one in a call its caller abandoned is
// dropped.
func (s *Store) spawn(ctx context.Context, fn func(context.Context)) error {
	if n := s.abandoned.Load(); n >= s.maxAbandoned {
		return fmt.Errorf("%w (%d)", ErrBacklog, n)
	}
	c := &call{done: make(chan struct{})}
	go s.runCall(ctx, c, fn)
	select {
	case <-c.done:
	case <-ctx.Done():
		// Counted before the state flips, so the goroutine's decrement can
		// never come first.
		s.abandoned.Add(1)
		if c.state.CompareAndSwap(running, abandoned) {
			return ctx.Err()
		}
		s.abandoned.Add(-1)
		<-c.done // it finished as ctx ended: the outcome is there
	}
	if c.panicked != nil {
		panic(c.panicked)
	}
	if !c.returned {
		return errors.New("redisstore: the command's goroutine exited (runtime.Goexit in a hook?)")
	}
	return nil
}

func (s *Store) runCall(ctx context.Context, c *call, fn func(context.Context)) {
	defer func() {
		r := recover()
		if !c.state.CompareAndSwap(running, finished) {
			s.abandoned.Add(-1) // the caller has gone; there is no one to tell
			return
		}
		c.panicked = r
		close(c.done)
	}()
	fn(ctx)
	c.returned = true
}

// fail wraps err from a command named op. When ctx has ended the error
// matches ctx.Err(), whatever go-redis made of it (an i/o timeout at the
// deadline, say); a value the server refused as too large matches
// store.ErrTooLarge.
func fail(ctx context.Context, op string, err error) error {
	if cerr := ctxErr(ctx); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("redisstore: %s: %w: %w", op, cerr, err)
	}
	if tooLarge(err) {
		return fmt.Errorf("redisstore: %s: %w: %w", op, store.ErrTooLarge, err)
	}
	return fmt.Errorf("redisstore: %s: %w", op, err)
}

// ctxErr is ctx.Err(), or DeadlineExceeded once the deadline has passed:
// a socket deadline set from ctx can fire a moment before ctx's own timer.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// tooLarge reports whether err is the server refusing a value above
// proto-max-bulk-len: "invalid bulk length" for a command argument,
// "string exceeds maximum allowed size" for a string grown in place.
func tooLarge(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.Contains(msg, "invalid bulk length") ||
		strings.Contains(msg, "exceeds maximum allowed size") ||
		strings.Contains(msg, "proto-max-bulk-len")
}

// syntaxError reports whether err is the server rejecting a command's
// options: SET with both NX and GET before Redis 7.0.
func syntaxError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(re.Error(), "syntax error")
}

// noScript reports whether err says the server does not hold a script
// (after a restart, a failover or SCRIPT FLUSH).
func noScript(err error) bool {
	return errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")
}
