package momentostore

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/momentohq/client-sdk-go/momento"
)

// What a store publishes on [Topic]: a version byte, the publishing
// store's 8-byte id, then records, each a uvarint length and that many
// bytes of a key. A record of length 0 (a key is never empty) means
// "anything may have changed": the publisher lost track of some of its
// own changes, so subscribers drop everything.
const (
	msgVersion = 1
	msgHeader  = 1 + 8
)

const (
	// maxPublish bounds one published message, well under Momento's limit
	// for a topic message.
	maxPublish = 32 << 10
	// maxPending bounds the keys waiting to be published; past it they
	// are dropped for one "anything may have changed".
	maxPending = 10_000
	// publishTimeout bounds one Publish; drainTimeout is how long Close
	// waits for what is pending.
	publishTimeout = 5 * time.Second
	drainTimeout   = time.Second
	// publishBackoff is the wait after a failed Publish, doubling up to
	// maxPublishBackoff.
	publishBackoff    = 100 * time.Millisecond
	maxPublishBackoff = 5 * time.Second
)

// publisher publishes the keys the store writes, in the background and
// coalesced: a burst of writes costs a few Publish calls, not one each,
// and never holds a writer. Its goroutine runs only while there is
// something to publish.
type publisher struct {
	s *Store

	mu      sync.Mutex
	keys    []string
	flush   bool          // a change went unpublished: send "anything may have changed"
	running chan struct{} // closed when the running goroutine ends; nil when none runs
	closing bool
	ctx     context.Context // cancelled when Close gives up on what is pending
	cancel  context.CancelFunc
	wake    chan struct{} // closed by Close, to cut a backoff short
}

// add queues keys for publishing, and starts the goroutine if none runs.
func (p *publisher) add(keys ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return
	}
	if len(p.keys)+len(keys) > maxPending {
		p.keys, p.flush = nil, true
	} else {
		p.keys = append(p.keys, keys...)
	}
	if p.running == nil {
		if p.ctx == nil {
			p.ctx, p.cancel = context.WithCancel(context.Background())
			p.wake = make(chan struct{})
		}
		p.running = make(chan struct{})
		go p.run(p.running)
	}
}

func (p *publisher) run(done chan struct{}) {
	defer close(done)
	backoff := publishBackoff
	for {
		p.mu.Lock()
		if len(p.keys) == 0 && !p.flush {
			p.running = nil
			p.mu.Unlock()
			return
		}
		msg, n := p.s.encodeMessage(p.keys, p.flush)
		p.keys = append([]string(nil), p.keys[n:]...)
		p.flush = false
		ctx, closing, wake := p.ctx, p.closing, p.wake
		p.mu.Unlock()

		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		_, err := p.s.topics.Publish(pctx, &momento.TopicPublishRequest{
			CacheName: p.s.cacheName, TopicName: Topic, Value: momento.Bytes(msg),
		})
		cancel()
		if err == nil {
			backoff = publishBackoff
			continue
		}
		// Publish is not retried by the SDK. Those keys are lost to the
		// subscribers, so owe them an "anything may have changed".
		p.mu.Lock()
		p.flush = true
		if closing || ctx.Err() != nil {
			p.running = nil
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-wake:
			t.Stop()
		}
		backoff = min(2*backoff, maxPublishBackoff)
	}
}

// close publishes what is pending, waiting up to drainTimeout, then gives
// up on the rest. Nothing is published after it returns.
func (p *publisher) close() {
	p.mu.Lock()
	p.closing = true
	done, cancel, wake := p.running, p.cancel, p.wake
	p.mu.Unlock()
	if done == nil {
		if cancel != nil {
			cancel()
		}
		return
	}
	close(wake)
	t := time.AfterFunc(drainTimeout, cancel)
	<-done
	t.Stop()
	cancel()
}

// encodeMessage makes one message of as many of keys as fit, preceded by a
// flush record when flush is set, and reports how many keys it took.
func (s *Store) encodeMessage(keys []string, flush bool) ([]byte, int) {
	b := make([]byte, 0, min(maxPublish, msgHeader+16*len(keys)+1))
	b = append(b, msgVersion)
	b = append(b, s.id[:]...)
	if flush {
		b = binary.AppendUvarint(b, 0)
	}
	n := 0
	for _, k := range keys {
		if len(b)+binary.MaxVarintLen64+len(k) > maxPublish {
			if n == 0 && len(b) == msgHeader {
				// A key too long for any message: say anything may
				// have changed instead.
				return binary.AppendUvarint(b, 0), 1
			}
			break
		}
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		n++
	}
	return b, n
}

// decodeMessage reads a published message: who sent it, the keys it names, and
// whether it says anything may have changed. ok is false for a message no
// store of this version wrote.
func decodeMessage(msg []byte) (from [8]byte, keys []string, flush, ok bool) {
	if len(msg) < msgHeader || msg[0] != msgVersion {
		return from, nil, false, false
	}
	copy(from[:], msg[1:msgHeader])
	b := msg[msgHeader:]
	for len(b) > 0 {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return from, nil, false, false
		}
		b = b[w:]
		if n == 0 {
			flush = true
			continue
		}
		keys = append(keys, string(b[:n]))
		b = b[n:]
	}
	return from, keys, flush, true
}
