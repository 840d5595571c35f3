package redisstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/readthrough-go/readthrough/store"
	"github.com/redis/go-redis/v9"
)

// Batch implements [store.Batcher] with one pipeline: one round trip on a
// single node; on a Cluster or a Ring, go-redis splits the pipeline by
// node and runs the parts side by side. Each op is the command its
// single-key method sends: GET, SET PX, SET NX GET PX, the
// compare-and-swap script, DEL.
//
// Scripts run by EVALSHA. The ops a server answers NOSCRIPT (it lost its
// scripts to a restart, a failover or SCRIPT FLUSH) are sent again by
// EVAL in a second pipeline, as are SET NX GET ops an old server
// rejected (then by the Lua equivalent): those ops then run after the
// rest of the batch. Ops on one key otherwise run in their order in ops.
//
// Batch returns an error, and sets it on every op, only when ctx ended
// before every reply arrived (or when too many commands are backlogged,
// see [ErrBacklog]); then no op's result can be trusted. Otherwise each op
// carries its own outcome.
func (s *Store) Batch(ctx context.Context, ops []store.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cmds := make([]redis.Cmder, len(ops))
	pipe := s.client.Pipeline()
	for i := range ops {
		op := &ops[i]
		op.Result, op.OK, op.Err = nil, false, nil
		cmds[i], op.Err = s.queue(ctx, pipe, op)
	}
	if err := s.exec(ctx, pipe, cmds); err != nil {
		return failAll(ops, err)
	}

	// Second round: ops whose script the server did not hold, or whose SET
	// NX GET it does not know.
	var again redis.Pipeliner
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		var retry redis.Cmder
		switch op := &ops[i]; {
		case op.Kind == store.OpCompareAndSwap && noScript(cmd.Err()):
			retry = compareAndSwap.Eval(ctx, pipeOf(&again, s.client), []string{op.Key}, casArgs(op.Value, ttlMs(op), op.Old)...)
		case isNXGet(op.Kind) && noScript(cmd.Err()):
			retry = setNXGet.Eval(ctx, pipeOf(&again, s.client), []string{op.Key}, op.Value, ttlMs(op))
		case isNXGet(op.Kind) && syntaxError(cmd.Err()):
			s.legacyNXGet.Store(true)
			retry = setNXGet.Eval(ctx, pipeOf(&again, s.client), []string{op.Key}, op.Value, ttlMs(op))
		default:
			continue
		}
		cmds[i] = retry
	}
	if again != nil {
		if err := s.exec(ctx, again, cmds); err != nil {
			return failAll(ops, err)
		}
	}

	// A value above the server's limit kills the connection, and every
	// op on it fails on the network: ask the limit once, so that op's
	// error matches store.ErrTooLarge.
	var lim int64
	for i, cmd := range cmds {
		if cmd != nil && cmd.Err() != nil && !isReply(cmd.Err()) && argSize(&ops[i]) > minBulkLimit {
			lim = s.serverBulkLimit(ctx)
			break
		}
	}
	for i, cmd := range cmds {
		if cmd != nil {
			read(ctx, &ops[i], cmd, lim)
		}
	}
	return nil
}

// argSize is the largest argument op sends.
func argSize(op *store.Op) int {
	return max(len(op.Key), len(op.Value), len(op.Old))
}

// queue adds op's command to pipe and returns it; or, for an op that
// cannot be sent, returns its error.
func (s *Store) queue(ctx context.Context, pipe redis.Pipeliner, op *store.Op) (redis.Cmder, error) {
	var ms int64
	switch op.Kind {
	case store.OpGet, store.OpDelete:
	case store.OpSet, store.OpSetIfAbsent, store.OpGetOrSet, store.OpCompareAndSwap:
		var err error
		if ms, err = s.checkWrite(ctx, op.Key, op.Value, op.TTL); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("redisstore: batch op %v: %w", op.Kind, errors.ErrUnsupported)
	}
	var cmd redis.Cmder
	switch op.Kind {
	case store.OpGet:
		cmd = redis.NewStringCmd(ctx, "get", op.Key)
	case store.OpDelete:
		cmd = redis.NewIntCmd(ctx, "del", op.Key)
	case store.OpSet:
		cmd = setCmd(ctx, op.Key, op.Value, ms)
	case store.OpSetIfAbsent, store.OpGetOrSet:
		if s.legacyNXGet.Load() {
			return setNXGet.EvalSha(ctx, pipe, []string{op.Key}, op.Value, ms), nil
		}
		cmd = setNXGetCmd(ctx, op.Key, op.Value, ms)
	case store.OpCompareAndSwap:
		return compareAndSwap.EvalSha(ctx, pipe, []string{op.Key}, casArgs(op.Value, ms, op.Old)...), nil
	}
	_ = pipe.Process(ctx, cmd) // queues; the outcome is read from cmd
	return cmd, nil
}

// exec runs pipe, bounded by ctx. It fails only when ctx ended before
// every reply came back, or on a backlog: then no command's outcome can
// be trusted.
func (s *Store) exec(ctx context.Context, pipe redis.Pipeliner, cmds []redis.Cmder) error {
	if pipe.Len() == 0 {
		return nil
	}
	if err := s.run(ctx, func(ctx context.Context) { _, _ = pipe.Exec(ctx) }); err != nil {
		return fail(ctx, "batch", err)
	}
	// With ContextTimeoutEnabled go-redis itself stops at the deadline, and
	// the commands it had no reply for carry an i/o error: report that as
	// the run above would have.
	if cerr := ctxErr(ctx); cerr != nil {
		for _, cmd := range cmds {
			if cmd != nil && cmd.Err() != nil && !isReply(cmd.Err()) {
				return fail(ctx, "batch", cmd.Err())
			}
		}
	}
	return nil
}

// read fills op's results from its command's reply.
// lim is the server's proto-max-bulk-len when known.
func read(ctx context.Context, op *store.Op, cmd redis.Cmder, lim int64) {
	var err error
	switch op.Kind {
	case store.OpGet:
		op.Result, op.OK, err = nxGetReply(cmd.(*redis.StringCmd)) // a nil reply is a miss
	case store.OpSet, store.OpDelete:
		err = cmd.Err()
	case store.OpSetIfAbsent, store.OpGetOrSet:
		var cur []byte
		var held bool
		if c, ok := cmd.(*redis.StringCmd); ok {
			cur, held, err = nxGetReply(c)
		} else {
			cur, held, err = scriptNXGetReply(cmd.(*redis.Cmd))
		}
		if err == nil {
			op.OK = !held || string(cur) == string(op.Value)
			if !op.OK && op.Kind == store.OpGetOrSet {
				op.Result = cur
			}
		}
	case store.OpCompareAndSwap:
		var n int64
		n, err = cmd.(*redis.Cmd).Int64()
		op.OK = err == nil && n == 1
	}
	if err == nil {
		return
	}
	name := "batch " + op.Kind.String()
	op.Result, op.OK, op.Err = nil, false, fail(ctx, name, err)
	if n := argSize(op); lim > 0 && int64(n) > lim && !tooLarge(err) {
		op.Err = fmt.Errorf("redisstore: %s: %d bytes, above the server's proto-max-bulk-len of %d: %w: %w", name, n, lim, store.ErrTooLarge, err)
	}
}

// failAll sets err on every op and returns it.
func failAll(ops []store.Op, err error) error {
	for i := range ops {
		ops[i].Result, ops[i].OK, ops[i].Err = nil, false, err
	}
	return err
}

// pipeOf returns *p, first making it a new pipeline of c.
func pipeOf(p *redis.Pipeliner, c redis.UniversalClient) redis.Pipeliner {
	if *p == nil {
		*p = c.Pipeline()
	}
	return *p
}

func isNXGet(k store.OpKind) bool { return k == store.OpSetIfAbsent || k == store.OpGetOrSet }

// ttlMs is op's TTL in whole milliseconds, rounded up; checked already.
func ttlMs(op *store.Op) int64 {
	ttl, _ := roundTTL(context.Background(), op.TTL)
	return ttl.Milliseconds()
}

// isReply reports whether err is the server's answer (an error reply, or
// nil), not a failure to get one.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}
