package fakemomento

import (
	"bytes"
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// historyLen is how many items a topic keeps for subscribers that resume
// after a reconnect; older ones are reported lost by a discontinuity.
const historyLen = 1024

type topicKey struct{ cache, topic string }

// topic is one topic's sequence, recent items and live subscriptions.
type topic struct {
	seq     uint64 // the last sequence number given out
	page    uint64
	history []sequenced
	subs    map[*subscriber]struct{}
}

type sequenced struct {
	seq  uint64
	item []byte // an encoded _TopicItem
}

// subscriber is one live Subscribe stream: what is queued for it, and a
// way to end it.
type subscriber struct {
	mu    sync.Mutex
	queue [][]byte // encoded _SubscriptionItem
	wake  chan struct{}
	kill  chan error
}

func (sub *subscriber) push(msg []byte) {
	sub.mu.Lock()
	sub.queue = append(sub.queue, msg)
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// topicLocked returns the topic, creating it, with s.mu held. A new topic
// starts on page 1, so that page 0 in a request means "no position".
func (s *Server) topicLocked(k topicKey) *topic {
	t, ok := s.topics[k]
	if !ok {
		t = &topic{page: 1, subs: map[*subscriber]struct{}{}}
		s.topics[k] = t
	}
	return t
}

// _SubscriptionItem{oneof item = 1, discontinuity = 2, heartbeat = 3}
func heartbeatMsg() []byte { return appendBytes(nil, 3, nil, true) }

func discontinuityMsg(last, next, page uint64) []byte {
	d := appendUint(appendUint(appendUint(nil, 1, last), 2, next), 3, page)
	return appendBytes(nil, 2, d, true)
}

// _TopicItem{topic_sequence_number = 1, value = 2, publisher_id = 3,
// sequence_page = 4}
func topicItem(seq, page uint64, value []byte) []byte {
	b := appendUint(nil, 1, seq)
	b = appendBytes(b, 2, value, true)
	b = appendBytes(b, 3, []byte("fakemomento"), false)
	return appendUint(b, 4, page)
}

// _PublishRequest{cache_name = 1, topic = 2, value = 3 _TopicValue{oneof
// text = 1, binary = 2}} -> common._Empty
func (s *Server) publish(_ context.Context, req message) ([]byte, error) {
	k := topicKey{req.str(1), req.str(2)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.caches[k.cache]; !ok {
		return nil, cacheNotFound(k.cache)
	}
	t := s.topicLocked(k)
	t.seq++
	it := topicItem(t.seq, t.page, bytes.Clone(req.bytes(3)))
	t.history = append(t.history, sequenced{t.seq, it})
	if len(t.history) > historyLen {
		t.history = t.history[len(t.history)-historyLen:]
	}
	msg := appendBytes(nil, 1, it, true)
	for sub := range t.subs {
		sub.push(msg)
	}
	return nil, nil
}

// _SubscriptionRequest{cache_name = 1, topic = 2,
// resume_at_topic_sequence_number = 3, sequence_page = 4} -> stream
// _SubscriptionItem. The first message is a heartbeat, as the SDK
// requires. A subscriber resuming on the current page gets the items after
// its position, or a discontinuity when they are gone; one resuming on an
// old page gets a discontinuity to the new one.
func (s *Server) subscribe(ctx context.Context, req message, send func([]byte) error) error {
	k := topicKey{req.str(1), req.str(2)}
	resume, page := req.uint(3), req.uint(4)
	sub := &subscriber{wake: make(chan struct{}, 1), kill: make(chan error, 1)}
	s.mu.Lock()
	if _, ok := s.caches[k.cache]; !ok {
		s.mu.Unlock()
		return cacheNotFound(k.cache)
	}
	t := s.topicLocked(k)
	sub.queue = append(sub.queue, heartbeatMsg())
	if resume != 0 || page != 0 {
		switch {
		case page != t.page:
			sub.queue = append(sub.queue, discontinuityMsg(resume, t.seq+1, t.page))
		case len(t.history) > 0 && t.history[0].seq > resume+1:
			sub.queue = append(sub.queue, discontinuityMsg(resume, t.history[0].seq, t.page))
			fallthrough
		default:
			for _, h := range t.history {
				if h.seq > resume {
					sub.queue = append(sub.queue, appendBytes(nil, 1, h.item, true))
				}
			}
		}
	}
	t.subs[sub] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(t.subs, sub)
		s.mu.Unlock()
	}()

	for {
		sub.mu.Lock()
		q := sub.queue
		sub.queue = nil
		sub.mu.Unlock()
		for _, msg := range q {
			if err := send(msg); err != nil {
				return err
			}
		}
		select {
		case <-sub.wake:
		case err := <-sub.kill:
			return err
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// each runs fn on every live subscriber of a topic, with s.mu held.
func (s *Server) each(cache, topicName string, fn func(t *topic, sub *subscriber)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topicLocked(topicKey{cache, topicName})
	for sub := range t.subs {
		fn(t, sub)
	}
}

// Subscribers returns how many Subscribe streams on the topic are open.
func (s *Server) Subscribers(cache, topicName string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.topicLocked(topicKey{cache, topicName}).subs)
}

// Heartbeat sends a heartbeat to every subscriber of the topic.
func (s *Server) Heartbeat(cache, topicName string) {
	s.each(cache, topicName, func(_ *topic, sub *subscriber) { sub.push(heartbeatMsg()) })
}

// Discontinuity tells every subscriber of the topic that items were lost:
// the sequence jumps ahead by lost numbers and a discontinuity says so.
func (s *Server) Discontinuity(cache, topicName string, lost uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topicLocked(topicKey{cache, topicName})
	last := t.seq
	t.seq += lost
	for sub := range t.subs {
		sub.push(discontinuityMsg(last, t.seq+1, t.page))
	}
}

// SkipSequence makes the topic's next item skip n sequence numbers, with
// no discontinuity: a gap only the numbers show.
func (s *Server) SkipSequence(cache, topicName string, n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.topicLocked(topicKey{cache, topicName}).seq += n
}

// NewPage moves the topic to a new sequence page, numbering from 1 again,
// as the service does when a topic moves; nothing tells subscribers but
// the page of the next item.
func (s *Server) NewPage(cache, topicName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topicLocked(topicKey{cache, topicName})
	t.page++
	t.seq = 0
	t.history = nil
}

// BreakSubscriptions ends every Subscribe stream of the topic with code,
// as a lost connection or a server restart would.
func (s *Server) BreakSubscriptions(cache, topicName string, code codes.Code) {
	s.each(cache, topicName, func(_ *topic, sub *subscriber) {
		select {
		case sub.kill <- status.Error(code, "fakemomento: stream broken"):
		default:
		}
	})
}
