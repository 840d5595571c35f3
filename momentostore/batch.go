package momentostore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/momentohq/client-sdk-go/momento"
	"github.com/momentohq/client-sdk-go/responses"
	"github.com/readthrough-go/readthrough/store"
)

// Per-item bytes a GetBatch or SetBatch request adds to a key and value
// (the item's tag and length, the key's and value's, the TTL), and the
// request's own: bounds, so every request stays under maxMessage.
const (
	batchItemOverhead = 32
	batchOverhead     = 64
)

// batchConcurrency bounds the RPCs one Batch runs at once.
const batchConcurrency = 16

// Batch implements [store.Batcher]:
//   - Get ops in one GetBatch (a server-streaming RPC; more only when the
//     keys alone would exceed a request's 5,243,000 bytes).
//   - Set ops in one SetBatch per TTL (SetBatch carries one TTL), split so
//     each request stays under the message limit.
//   - SetIfAbsent, CompareAndSwap and Delete ops as single calls.
//   - GetOrSet and other kinds: an error matching errors.ErrUnsupported.
//
// The requests run concurrently, so two ops on one key see no order
// between them. GetBatch and SetBatch are not retried by the SDK on
// UNAVAILABLE, and GetBatch carries no read concern: its reads are not
// CONSISTENT, whatever the client's configuration. The cache batches only
// value reads, never the polling of a lock or a lease, so a stale replica
// costs at most a load.
//
// Batch returns an error only when ctx is done before it starts; otherwise
// each op carries its own.
func (s *Store) Batch(ctx context.Context, ops []store.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var gets []int
	sets := map[time.Duration][]int{}
	var tasks []func()
	for i := range ops {
		op := &ops[i]
		op.Result, op.OK, op.Err = nil, false, nil
		switch op.Kind {
		case store.OpGet:
			gets = append(gets, i)
		case store.OpSet:
			ttl, err := checkWrite(ctx, op.Key, op.Value, op.TTL)
			if err != nil {
				op.Err = err
				continue
			}
			sets[ttl] = append(sets[ttl], i)
		case store.OpSetIfAbsent, store.OpCompareAndSwap, store.OpDelete:
			tasks = append(tasks, func() { s.single(ctx, op) })
		default:
			op.Err = fmt.Errorf("momentostore: batch %v: %w", op.Kind, errors.ErrUnsupported)
		}
	}
	for _, chunk := range split(ops, gets, false) {
		tasks = append(tasks, func() { s.getBatch(ctx, ops, chunk) })
	}
	for ttl, idx := range sets {
		for _, chunk := range split(ops, idx, true) {
			tasks = append(tasks, func() { s.setBatch(ctx, ops, chunk, ttl) })
		}
	}
	run(tasks)
	return nil
}

// run runs tasks, at most batchConcurrency at once, and returns when all
// have: no goroutine outlives the Batch.
func run(tasks []func()) {
	if len(tasks) == 1 {
		tasks[0]()
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, batchConcurrency)
	for _, task := range tasks {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			task()
		})
	}
	wg.Wait()
}

// split groups the ops at idx into requests that stay under maxMessage.
// An entry of at most MaxEntrySize always fits a request of its own.
func split(ops []store.Op, idx []int, withValues bool) [][]int {
	var chunks [][]int
	var cur []int
	size := batchOverhead
	for _, i := range idx {
		n := len(ops[i].Key) + batchItemOverhead
		if withValues {
			n += len(ops[i].Value)
		}
		if len(cur) > 0 && size+n > maxMessage {
			chunks = append(chunks, cur)
			cur, size = nil, batchOverhead
		}
		cur = append(cur, i)
		size += n
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks
}

// single runs one op that has no batch RPC.
func (s *Store) single(ctx context.Context, op *store.Op) {
	switch op.Kind {
	case store.OpSetIfAbsent:
		op.OK, op.Err = s.SetIfAbsent(ctx, op.Key, op.Value, op.TTL)
	case store.OpCompareAndSwap:
		op.OK, op.Err = s.CompareAndSwap(ctx, op.Key, op.Old, op.Value, op.TTL)
	case store.OpDelete:
		op.Err = s.Delete(ctx, op.Key)
	}
}

// The SDK returns GetBatchSuccess and SetBatchSuccess by value, where its
// other responses are pointers; these match either.
type (
	getResults interface {
		Results() []responses.GetResponse
	}
	setResults interface {
		Results() []responses.SetResponse
	}
)

func (s *Store) getBatch(ctx context.Context, ops []store.Op, idx []int) {
	keys := make([]momento.Value, len(idx))
	for j, i := range idx {
		keys[j] = momento.String(ops[i].Key)
	}
	resp, err := s.client.GetBatch(ctx, &momento.GetBatchRequest{CacheName: s.cacheName, Keys: keys})
	fail := func(err error) {
		for _, i := range idx {
			ops[i].Err = err
		}
	}
	if err != nil {
		fail(mapError(ctx, "get batch", err))
		return
	}
	r, ok := resp.(getResults)
	if !ok {
		fail(fmt.Errorf("momentostore: get batch: unexpected response %T", resp))
		return
	}
	results := r.Results()
	if len(results) != len(idx) {
		fail(fmt.Errorf("momentostore: get batch: %d results for %d keys", len(results), len(idx)))
		return
	}
	for j, i := range idx {
		switch g := results[j].(type) {
		case *responses.GetHit:
			ops[i].Result, ops[i].OK = g.ValueByte(), true
		case *responses.GetMiss:
		default:
			ops[i].Err = fmt.Errorf("momentostore: get batch: unexpected result %T", g)
		}
	}
}

func (s *Store) setBatch(ctx context.Context, ops []store.Op, idx []int, ttl time.Duration) {
	items := make([]momento.BatchSetItem, len(idx))
	keys := make([]string, len(idx))
	for j, i := range idx {
		items[j] = momento.BatchSetItem{Key: momento.String(ops[i].Key), Value: momento.Bytes(ops[i].Value)}
		keys[j] = ops[i].Key
	}
	resp, err := s.client.SetBatch(ctx, &momento.SetBatchRequest{CacheName: s.cacheName, Items: items, Ttl: ttl})
	s.changed(keys...) // a failed SetBatch may have stored some
	if err == nil {
		if r, ok := resp.(setResults); !ok {
			err = fmt.Errorf("unexpected response %T", resp)
		} else if n := len(r.Results()); n != len(idx) {
			err = fmt.Errorf("%d results for %d items", n, len(idx))
		}
	}
	if err != nil {
		err = mapError(ctx, "set batch", err)
		for _, i := range idx {
			ops[i].Err = err
		}
	}
}
