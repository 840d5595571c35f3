package momentostore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/momentohq/client-sdk-go/config/retry"
	"github.com/momentohq/client-sdk-go/momento"
	"github.com/readthrough-go/readthrough/store"
)

const (
	// resubscribeDelay is the wait before the SDK resubscribes a lost
	// stream, as its default strategy waits.
	resubscribeDelay = 500 * time.Millisecond
	// subscribeBackoff is the wait after a failed Subscribe, doubling up
	// to maxSubscribeBackoff.
	subscribeBackoff    = 500 * time.Millisecond
	maxSubscribeBackoff = 10 * time.Second
)

// Notify implements [store.Notifier] through Momento Topics, best effort.
//
// Every write this store makes (Set, a SetIfAbsent that stored, a
// CompareAndSwap that swapped, Delete, CompareAndDelete, the writes of a
// Batch, and any of them whose outcome is unknown) is reported to this
// store's listeners before the call returns, and published on [Topic] in
// the background, coalesced. Notify subscribes to the topic, one
// subscription per Store however many listeners, and reports to each
// listener the keys under its prefix that other stores wrote.
//
// Connected is always called with complete false: a writer that is not a
// momentostore (another client of the cache, the console) publishes
// nothing, so the cache keeps bounding near copies by NearOptions.MaxAge.
//
// Disconnected is called, then Connected again once the stream flows, on
// anything that may have lost a change: a lost stream (the SDK
// resubscribes every 500 ms, from the last sequence number it saw), a
// discontinuity, a gap in the sequence numbers, a new sequence page, a
// message the store cannot read, or a publisher that failed to publish
// some of its changes.
//
// Notify returns at once; Connected comes when the subscription is up.
// stop ends the subscription with the last listener, promptly even while
// the service is unreachable. A store made by [New] has no topic client:
// Notify returns an error matching errors.ErrUnsupported.
func (s *Store) Notify(prefix string, l store.Listener) (stop func(), err error) {
	if s.topics == nil {
		return nil, fmt.Errorf("momentostore: notify: %w: the store has no topic client (see NewWithTopics)", errors.ErrUnsupported)
	}
	return s.notify.add(prefix, l)
}

// changed tells this store's listeners, and through the topic every other
// store's, that keys were written.
func (s *Store) changed(keys ...string) {
	if s.topics == nil {
		return
	}
	s.notify.changed(keys, nil)
	s.pub.add(keys...)
}

// notifier fans the store's one subscription out to its listeners.
//
// Every call to a listener is made with mu held, so stop (which takes mu)
// returns only once no call is running, and none starts after.
type notifier struct {
	s *Store

	life sync.Mutex // held while a pump starts or ends, so at most one exists

	mu        sync.Mutex
	listeners map[*listener]struct{}
	pump      *pump // the running subscription, nil when none
	connected bool  // pump's stream is flowing
	closed    bool
}

type listener struct {
	prefix  string
	l       store.Listener
	told    bool // told Connected, and not Disconnected since
	stopped bool
	wg      sync.WaitGroup // the goroutine telling a late listener Connected
}

// pump is one subscription and the goroutine reading it.
type pump struct {
	ctx    context.Context // long-lived: the SDK runs the stream, and resubscribes, under it
	cancel context.CancelFunc
	done   chan struct{}
	lost   atomic.Bool // the stream was lost: report Connected on the next event
}

func (n *notifier) add(prefix string, l store.Listener) (func(), error) {
	e := &listener{prefix: prefix, l: l}
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("momentostore: notify: the store is closed")
	}
	if n.listeners == nil {
		n.listeners = map[*listener]struct{}{}
	}
	n.listeners[e] = struct{}{}
	if n.pump == nil {
		ctx, cancel := context.WithCancel(context.Background())
		n.pump = &pump{ctx: ctx, cancel: cancel, done: make(chan struct{})}
		go n.run(n.pump)
	} else if n.connected {
		// Told from a goroutine of ours, not from inside Notify, whose
		// caller may hold locks the listener takes.
		e.wg.Go(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			if n.connected {
				n.tellConnected(e)
			}
		})
	}
	var once sync.Once
	return func() { once.Do(func() { n.remove(e) }) }, nil
}

// remove stops telling e, and ends the subscription with the last
// listener, waiting for its goroutine.
func (n *notifier) remove(e *listener) {
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	e.stopped = true
	delete(n.listeners, e)
	var p *pump
	if len(n.listeners) == 0 {
		p, n.pump, n.connected = n.pump, nil, false
	}
	n.mu.Unlock()
	e.wg.Wait()
	if p != nil {
		p.cancel()
		<-p.done
	}
}

// close stops every listener and the subscription; Notify fails after it.
func (n *notifier) close() {
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	n.closed = true
	ls := n.listeners
	for e := range ls {
		e.stopped = true
	}
	n.listeners = nil
	p := n.pump
	n.pump, n.connected = nil, false
	n.mu.Unlock()
	for e := range ls {
		e.wg.Wait()
	}
	if p != nil {
		p.cancel()
		<-p.done
	}
}

// report runs fn with mu held, unless p is no longer the running pump.
func (n *notifier) report(p *pump, fn func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.pump == p && p.ctx.Err() == nil {
		fn()
	}
}

// The tell functions are called with mu held.

func (n *notifier) tellConnected(e *listener) {
	if !e.stopped && !e.told {
		e.told = true
		e.l.Connected(false)
	}
}

func (n *notifier) setConnected() {
	n.connected = true
	for e := range n.listeners {
		n.tellConnected(e)
	}
}

func (n *notifier) setDisconnected(err error) {
	n.connected = false
	for e := range n.listeners {
		if e.told && !e.stopped {
			e.told = false
			e.l.Disconnected(err)
		}
	}
}

// flush says that changes may have been missed, while the stream still
// flows: every listener drops what it holds and carries on.
func (n *notifier) flush(err error) {
	n.setDisconnected(err)
	n.setConnected()
}

// changed tells the listeners whose prefix matches about keys. p is the
// pump they came from, nil for this store's own writes.
func (n *notifier) changed(keys []string, p *pump) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p != nil && (n.pump != p || p.ctx.Err() != nil) {
		return
	}
	for e := range n.listeners {
		if e.stopped {
			continue
		}
		for _, k := range keys {
			if strings.HasPrefix(k, e.prefix) {
				e.l.Changed(k)
			}
		}
	}
}

// run subscribes, reads, and subscribes again, until p is cancelled.
func (n *notifier) run(p *pump) {
	defer close(p.done)
	backoff := subscribeBackoff
	for {
		sub, err := n.s.topics.Subscribe(p.ctx, &momento.TopicSubscribeRequest{CacheName: n.s.cacheName, TopicName: Topic})
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			n.report(p, func() { n.setDisconnected(mapError(p.ctx, "subscribe", err)) })
			if !sleep(p.ctx, backoff) {
				return
			}
			backoff = min(2*backoff, maxSubscribeBackoff)
			continue
		}
		backoff = subscribeBackoff
		p.lost.Store(false)
		n.report(p, n.setConnected) // the SDK returns once the first heartbeat came
		err = n.read(p, sub)
		sub.Close()
		if p.ctx.Err() != nil {
			return
		}
		n.report(p, func() { n.setDisconnected(mapError(p.ctx, "subscription", err)) })
	}
}

// read reports what the subscription brings until it fails.
func (n *notifier) read(p *pump, sub momento.TopicSubscription) error {
	var seq, page uint64
	have := false // seq and page hold the last item's position
	for {
		// Event, not Item: Item skips discontinuities silently.
		ev, err := sub.Event(p.ctx)
		if err != nil {
			return err
		}
		if p.lost.Swap(false) {
			// The SDK resubscribed (resubscribe reported Disconnected):
			// whatever came through is flowing again.
			have = false
			n.report(p, n.setConnected)
		}
		switch ev := ev.(type) {
		case momento.TopicDiscontinuity:
			have = false
			n.report(p, func() {
				n.flush(fmt.Errorf("momentostore: topic discontinuity: after %d, next %d on page %d",
					ev.GetLastKnownSequenceNumber(), ev.GetNewSequenceNumber(), ev.GetNewSequencePage()))
			})
		case momento.TopicItem:
			num, pg := ev.GetTopicSequenceNumber(), ev.GetTopicSequencePage()
			if have && pg == page && num <= seq {
				continue // a replay of an item already seen
			}
			if have && (pg != page || num != seq+1) {
				n.report(p, func() {
					n.flush(fmt.Errorf("momentostore: topic gap: item %d on page %d after %d on page %d", num, pg, seq, page))
				})
			}
			have, seq, page = true, num, pg
			n.item(p, ev)
		}
	}
}

// item reports the keys a message names, unless this store published it
// (its listeners were told when it wrote).
func (n *notifier) item(p *pump, it momento.TopicItem) {
	var msg []byte
	switch v := it.GetValue().(type) {
	case momento.Bytes:
		msg = v
	case momento.String:
		msg = []byte(v)
	}
	from, keys, flush, ok := decodeMessage(msg)
	switch {
	case !ok:
		n.report(p, func() { n.flush(errors.New("momentostore: an unreadable message on the topic")) })
	case from == n.s.id:
	case flush:
		n.report(p, func() { n.flush(errors.New("momentostore: a store failed to publish some of its changes")) })
		n.changed(keys, p)
	default:
		n.changed(keys, p)
	}
}

// resubscribe is the retry strategy of the store's topic client, which the
// SDK consults only to resubscribe a lost stream. It reports the loss, and
// waits, ending the wait (and the SDK's reconnect loop, which never checks
// its context itself) once the subscription is stopped.
type resubscribe struct{ n *notifier }

// DetermineWhenToRetry implements retry.Strategy.
func (r resubscribe) DetermineWhenToRetry(props retry.StrategyProps) *int {
	r.n.mu.Lock()
	p := r.n.pump
	r.n.mu.Unlock()
	if p == nil || p.ctx.Err() != nil {
		return nil
	}
	p.lost.Store(true)
	r.n.report(p, func() {
		r.n.setDisconnected(fmt.Errorf("%w: topic stream lost (%v); resubscribing", ErrUnavailable, props.GrpcStatusCode))
	})
	if !sleep(p.ctx, resubscribeDelay) {
		return nil
	}
	var now int // the wait is done
	return &now
}

// sleep waits d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
