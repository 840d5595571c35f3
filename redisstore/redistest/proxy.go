package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a fault-injecting TCP proxy in front of a redis-server on
// loopback. Point clients at Addr; by default it forwards every byte
// unchanged. Its methods inject faults and clear them (Heal); all of them
// are safe for concurrent use.
//
// It puts a real network between a client and a redis-server. Tests of a
// store adapter that talk to redis-server directly over loopback never see
// the failures a production client sees, and a fake client that honours
// contexts and never loses a reply hides exactly the bugs that matter. Each
// fault below reproduces one real failure, as a default go-redis client
// meets it:
//
//   - [Proxy.SetLatency]: a distant or congested link (cross-zone Redis, a
//     saturated NIC). Every chunk is held back in each direction, so a
//     round trip gains twice the delay and pipelines keep their overlap.
//   - [Proxy.Blackhole]: a network partition, a dead host whose connections were
//     never reset, a security group or conntrack table that drops packets.
//     Bytes vanish and nothing answers; the only way out for the client is
//     a timer of its own. go-redis ignores context deadlines on its sockets
//     unless ContextTimeoutEnabled is set, so a command with a 100 ms
//     context waits out its ReadTimeout (5 s by default) and only then
//     returns context.DeadlineExceeded.
//   - [Proxy.ResetAll] and [Proxy.RefuseNew]: a server restart, a failover, a load balancer
//     or NAT gateway dropping its state, a server with no free client slot.
//     Connections die at once with a TCP reset.
//   - [Proxy.CutNextReply]: a server or proxy that dies mid-write, or a connection
//     killed while a large value is in flight. The client holds part of a
//     reply and then EOF.
//   - [Proxy.LoseNextReply]: the most dangerous of them. The command reached the
//     server and took effect, but the connection died before the reply came
//     back. The client sees a network error for an operation that happened,
//     and go-redis retries it on a new connection, so SET NX answers "not
//     set" to the very client that set it, INCR counts twice, and a
//     pipeline runs again whole.
//
// To match replies to the commands that caused them, the proxy parses the
// client's commands (RESP arrays of bulk strings, pipelined or not) and
// frames the server's replies (every RESP2 and RESP3 type). Push messages
// (RESP3 '>') are never replies; a connection that subscribes, monitors or
// turns replies off is forwarded as raw bytes from then on, and no reply
// fault applies to it.
type Proxy struct {
	// Addr is the loopback address clients dial.
	Addr string

	target  string
	ln      net.Listener
	wg      sync.WaitGroup // the accept loop and every connection goroutine
	ctx     context.Context
	cancel  context.CancelFunc // aborts dials in progress on Close
	latency atomic.Int64       // time.Duration
	hole    atomic.Bool        // blackhole on

	mu     sync.Mutex
	closed bool
	refuse bool
	conns  map[*proxyConn]struct{}
	faults []replyFault // armed, each claimed by the first command it matches
	counts map[string]int
}

// replyFault cuts the reply to one command after keep bytes and closes the
// client's connection.
type replyFault struct {
	match func(args []string) bool // nil matches any command
	keep  int
}

// StartProxy starts a proxy to target (a redis-server's address) and closes
// it when t ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := NewProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// NewProxy starts a proxy to target on a free loopback port, for programs;
// Close it when done.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("redistest: proxy: %w", err)
	}
	p := &Proxy{
		Addr:   ln.Addr().String(),
		target: target,
		ln:     ln,
		conns:  make(map[*proxyConn]struct{}),
		counts: make(map[string]int),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Close stops accepting, resets every open connection and waits until every
// goroutine of the proxy has ended. It is safe to call twice.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	_ = p.ln.Close()
	p.ResetAll()
	p.wg.Wait()
}

// SetLatency delays every chunk forwarded in either direction by d, so a
// round trip gains 2*d. Order is kept on each connection; chunks already
// queued keep the delay they were given. Zero turns it off.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Blackhole turns the partition on or off. While on, new connections are
// accepted but never reach the server, and every byte read from either side
// of any connection is discarded: nothing is forwarded, nothing answers.
// A connection that lost a byte this way stays dead when the blackhole is
// turned off (its stream could never be resynchronised); it ends when the
// client closes it, or on ResetAll or Close. Connections that carried
// nothing while it was on, and new ones, forward again.
func (p *Proxy) Blackhole(on bool) { p.hole.Store(on) }

// ResetAll resets every open connection at once, with a TCP RST to the
// client.
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close(true)
	}
}

// RefuseNew makes the proxy reset every new connection as soon as it is
// accepted (while on). Existing connections are untouched.
func (p *Proxy) RefuseNew(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// CutNextReply cuts the reply to the next command forwarded on any
// connection: its first n bytes reach the client, then the proxy closes that
// connection. With n at least the reply's length the whole reply arrives
// before the close. Each call arms one cut. Any command means any: the
// HELLO a client sends on a new connection claims it too, so warm the
// client up first, or name the command with CutNextReplyTo.
func (p *Proxy) CutNextReply(n int) { p.arm(replyFault{keep: max(n, 0)}) }

// CutNextReplyTo is CutNextReply for the next command that satisfies match
// (see LoseNextReply).
func (p *Proxy) CutNextReplyTo(n int, match func(args []string) bool) {
	p.arm(replyFault{match: match, keep: max(n, 0)})
}

// LoseNextReply lets the next command that satisfies match reach the server
// and take effect, then drops its reply and closes the client's connection:
// the client sees a network error for an operation that happened. match gets
// the command as sent, with its name (args[0]) in lower case as go-redis
// names commands ("set"); the other arguments are as the client wrote them
// (go-redis writes options in lower case too, other clients may not), so
// compare them with strings.EqualFold. match runs with the proxy's lock
// held, so it must not call the proxy. Each call arms one loss.
func (p *Proxy) LoseNextReply(match func(args []string) bool) {
	p.arm(replyFault{match: match, keep: 0})
}

func (p *Proxy) arm(f replyFault) {
	p.mu.Lock()
	p.faults = append(p.faults, f)
	p.mu.Unlock()
}

// Heal clears every fault: latency, blackhole, refusal and armed reply
// faults. A reply fault already claimed by a command in flight still
// happens, and connections killed by the blackhole stay dead.
func (p *Proxy) Heal() {
	p.SetLatency(0)
	p.Blackhole(false)
	p.mu.Lock()
	p.refuse = false
	p.faults = nil
	p.mu.Unlock()
}

// Conns reports how many client connections are open through the proxy,
// blackholed ones included.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Count reports how many commands named name (case-insensitive) the proxy
// has forwarded to the server, retries included. Commands swallowed by the
// blackhole are not counted.
func (p *Proxy) Count(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[strings.ToLower(name)]
}

// Commands returns a copy of every command count, by lower-case name.
func (p *Proxy) Commands() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.counts)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // transient (out of descriptors): try again shortly
			time.Sleep(5 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	p.mu.Lock()
	refuse := p.refuse || p.closed
	p.mu.Unlock()
	if refuse {
		reset(client)
		return
	}
	c := &proxyConn{p: p, client: client, done: make(chan struct{})}
	if p.hole.Load() {
		// A partition: the handshake completes, nothing else ever does.
		c.dead.Store(true)
		if p.register(c) {
			c.sink()
		}
		return
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	server, err := d.DialContext(dctx, "tcp", p.target)
	cancel()
	if err != nil {
		reset(client)
		return
	}
	c.server = server.(*net.TCPConn)
	if !p.register(c) {
		return
	}
	up := make(chan chunk, 64)
	down := make(chan chunk, 64)
	p.wg.Add(3)
	go func() { defer p.wg.Done(); c.write(c.server, up) }()
	go func() { defer p.wg.Done(); c.write(c.client, down) }()
	go func() { defer p.wg.Done(); c.readReplies(down) }()
	c.readCommands(up)
}

// register adds c to the open connections, or resets it if the proxy is
// closing (so Close never misses it).
func (p *Proxy) register(c *proxyConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		reset(c.client)
		if c.server != nil {
			_ = c.server.Close()
		}
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// command counts a command on its way to the server and, if claim is set,
// hands it the first armed fault it matches (or -1: none).
func (p *Proxy) command(args []string, claim bool) (cut int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[args[0]]++
	if !claim {
		return -1
	}
	for i, f := range p.faults {
		if f.match == nil || f.match(args) {
			p.faults = append(p.faults[:i:i], p.faults[i+1:]...)
			return f.keep
		}
	}
	return -1
}

func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// proxyConn is one client connection and its server connection, served by
// four goroutines: a reader and a (delaying) writer in each direction.
type proxyConn struct {
	p      *Proxy
	client *net.TCPConn
	server *net.TCPConn   // nil when blackholed from the start
	done   chan struct{}  // closed by close: writers stop waiting
	once   sync.Once      // guards close
	dead   atomic.Bool    // lost bytes to the blackhole: discard forever
	mu     sync.Mutex     // guards queue
	queue  []pendingReply // commands forwarded whose reply has not started
}

// pendingReply is what the reply-side needs to know about a command: a
// fault to apply, or that replies can no longer be matched from here on.
type pendingReply struct {
	cut int  // bytes of the reply to forward before closing; -1: all
	raw bool // replies stop matching commands (SUBSCRIBE, MONITOR, ...)
}

type chunk struct {
	data []byte
	due  time.Time
}

// close ends both connections, once; reset sends the client a RST.
func (c *proxyConn) close(reset bool) {
	c.once.Do(func() {
		if reset {
			_ = c.client.SetLinger(0)
		}
		close(c.done)
		_ = c.client.Close()
		if c.server != nil {
			if reset {
				_ = c.server.SetLinger(0)
			}
			_ = c.server.Close()
		}
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}

// discarding reports whether bytes just read must vanish: the blackhole is
// on now, or was when this connection last carried a byte.
func (c *proxyConn) discarding() bool {
	if c.dead.Load() {
		return true
	}
	if c.p.hole.Load() {
		c.dead.Store(true)
		return true
	}
	return false
}

// sink reads and discards the client's bytes until it goes away.
func (c *proxyConn) sink() {
	defer c.close(false)
	buf := make([]byte, 32<<10)
	for {
		if _, err := c.client.Read(buf); err != nil {
			return
		}
	}
}

// send queues data for the writer, delayed by the current latency. It
// reports false once the connection is closed.
func (c *proxyConn) send(q chan<- chunk, data []byte) bool {
	ch := chunk{data: data, due: time.Now().Add(time.Duration(c.p.latency.Load()))}
	select {
	case q <- ch:
		return true
	case <-c.done:
		return false
	}
}

// write forwards queued chunks to dst, each at its due time. When the queue
// ends (its reader is done) or a write fails, the connection closes.
func (c *proxyConn) write(dst net.Conn, q <-chan chunk) {
	defer c.close(false)
	var t *time.Timer
	for ch := range q {
		if d := time.Until(ch.due); d > 0 {
			if t == nil {
				t = time.NewTimer(d)
			} else {
				t.Reset(d)
			}
			select {
			case <-t.C:
			case <-c.done:
				return
			}
		}
		if _, err := dst.Write(ch.data); err != nil {
			return
		}
	}
}

// readCommands forwards the client's bytes to the server, parsing commands
// as they pass so each is counted, matched against armed faults and queued
// for the reply side before its last byte can reach the server.
func (c *proxyConn) readCommands(up chan<- chunk) {
	defer close(up)
	var parser commandParser
	parsing := true // false after a protocol error
	tracked := true // replies still pair with commands
	buf := make([]byte, 32<<10)
	for {
		n, err := c.client.Read(buf)
		if n > 0 && !c.discarding() {
			data := bytes.Clone(buf[:n])
			if parsing {
				perr := parser.feed(data, func(args []string) {
					if !tracked {
						c.p.command(args, false)
						return
					}
					if untracked(args) {
						tracked = false
						c.p.command(args, false)
						c.enqueue(pendingReply{cut: -1, raw: true})
						return
					}
					c.enqueue(pendingReply{cut: c.p.command(args, true)})
				})
				if perr != nil {
					parsing = false
					if tracked {
						tracked = false
						c.enqueue(pendingReply{cut: -1, raw: true})
					}
				}
			}
			if !c.send(up, data) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// untracked reports whether args makes the server send replies that do not
// pair one-to-one with commands.
func untracked(args []string) bool {
	switch args[0] {
	case "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe",
		"sunsubscribe", "monitor", "sync", "psync":
		return true
	case "client":
		return len(args) > 1 && strings.EqualFold(args[1], "reply")
	}
	return false
}

func (c *proxyConn) enqueue(p pendingReply) {
	c.mu.Lock()
	c.queue = append(c.queue, p)
	c.mu.Unlock()
}

// dequeue returns the oldest command waiting for its reply; an unsolicited
// reply (none waiting) gets no fault.
func (c *proxyConn) dequeue() pendingReply {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return pendingReply{cut: -1}
	}
	p := c.queue[0]
	c.queue[0] = pendingReply{}
	c.queue = c.queue[1:]
	return p
}

// readReplies forwards the server's bytes to the client, framing replies so
// that a fault claimed by a command cuts that command's reply.
func (c *proxyConn) readReplies(down chan<- chunk) {
	defer close(down)
	var fr replyFramer
	raw := false
	inReply := false
	cut, sent := -1, 0 // for the reply in progress
	buf := make([]byte, 32<<10)
	for {
		n, err := c.server.Read(buf)
		if n > 0 && !c.discarding() {
			data := buf[:n]
			out := make([]byte, 0, n)
			for len(data) > 0 && !raw {
				if !inReply {
					cut, sent = -1, 0
					if data[0] != '>' { // a push answers no command
						p := c.dequeue()
						if p.raw {
							raw = true
							break
						}
						cut = p.cut
					}
					inReply = true
				}
				k, done, ferr := fr.feed(data)
				if ferr != nil {
					raw = true
					break
				}
				seg := data[:k]
				data = data[k:]
				if cut >= 0 && (sent+len(seg) >= cut || done) {
					// The fault: forward what is left of the first cut
					// bytes, then end the connection after the writer
					// has flushed them.
					out = append(out, seg[:min(cut-sent, len(seg))]...)
					if len(out) > 0 {
						c.send(down, out)
					}
					return
				}
				out = append(out, seg...)
				sent += len(seg)
				inReply = !done
			}
			out = append(out, data...) // raw from here on
			if !c.send(down, out) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// commandParser splits a client's byte stream into commands: RESP arrays of
// bulk strings, or inline commands (space-separated words on one line).
type commandParser struct {
	line []byte   // header line read so far
	args []string // arguments of the command being read
	left int      // bulk strings still to read in it
	body []byte   // bulk string read so far
	need int      // bulk bytes (CRLF included) still to read; 0: expect a line
}

const maxLine = 64 << 10 // as Redis caps inline commands and headers

var errProtocol = errors.New("redistest: proxy: RESP protocol error")

// feed parses b, calling emit for each command it completes. After an error
// the stream cannot be parsed any further.
func (p *commandParser) feed(b []byte, emit func(args []string)) error {
	for len(b) > 0 {
		if p.need > 0 {
			k := min(p.need, len(b))
			p.body = append(p.body, b[:k]...)
			p.need -= k
			b = b[k:]
			if p.need > 0 {
				return nil
			}
			if !bytes.HasSuffix(p.body, []byte("\r\n")) {
				return errProtocol
			}
			p.args = append(p.args, string(p.body[:len(p.body)-2]))
			p.body = p.body[:0]
			p.left--
			if p.left == 0 {
				p.done(emit)
			}
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.line = append(p.line, b...)
			if len(p.line) > maxLine {
				return errProtocol
			}
			return nil
		}
		p.line = append(p.line, b[:i+1]...)
		b = b[i+1:]
		line := bytes.TrimSuffix(p.line[:len(p.line)-1], []byte("\r"))
		p.line = p.line[:0]
		switch {
		case p.left > 0:
			n, ok := header(line, '$')
			if !ok || n < 0 {
				return errProtocol
			}
			p.need = n + 2
		case len(line) > 0 && line[0] == '*':
			n, ok := header(line, '*')
			if !ok {
				return errProtocol
			}
			if n > 0 { // Redis ignores empty and null arrays
				p.left = n
				p.args = make([]string, 0, n)
			}
		default: // inline
			if f := strings.Fields(string(line)); len(f) > 0 {
				p.args = f
				p.done(emit)
			}
		}
	}
	return nil
}

func (p *commandParser) done(emit func(args []string)) {
	args := p.args
	p.args = nil
	args[0] = strings.ToLower(args[0])
	emit(args)
}

// header parses a "<typ><int>" line.
func header(line []byte, typ byte) (int, bool) {
	if len(line) < 2 || line[0] != typ {
		return 0, false
	}
	n, err := strconv.Atoi(string(line[1:]))
	return n, err == nil
}

// replyFramer finds where each server reply ends in a byte stream, across
// chunk boundaries, without holding the reply: RESP2 and RESP3 simple
// types, bulk and verbatim strings, blob errors, arrays, sets, maps, pushes,
// attributes (which belong to the value that follows them), nulls, and
// streamed strings and aggregates.
type replyFramer struct {
	line    []byte  // header line read so far
	skip    int     // string bytes (CRLF included) still to pass over
	stack   []frame // open aggregates, innermost last
	chunked bool    // inside a streamed string ($?): expect ";<len>" parts
}

type frame struct {
	left int  // elements still to come; -1: streamed, ends with "."
	attr bool // an attribute: completes no value of its own
}

// feed consumes b up to the end of the current reply and reports how many
// bytes that took and whether the reply ended there.
func (f *replyFramer) feed(b []byte) (n int, done bool, err error) {
	for n < len(b) {
		if f.skip > 0 {
			k := min(f.skip, len(b)-n)
			f.skip -= k
			n += k
			if f.skip == 0 && !f.chunked && f.valueDone() {
				return n, true, nil
			}
			continue
		}
		i := bytes.IndexByte(b[n:], '\n')
		if i < 0 {
			f.line = append(f.line, b[n:]...)
			if len(f.line) > maxLine {
				return len(b), false, errProtocol
			}
			return len(b), false, nil
		}
		f.line = append(f.line, b[n:n+i+1]...)
		n += i + 1
		value, err := f.header()
		f.line = f.line[:0]
		if err != nil {
			return n, false, err
		}
		if value && f.valueDone() {
			return n, true, nil
		}
	}
	return n, false, nil
}

// header reads one header line and reports whether it completed a value.
func (f *replyFramer) header() (value bool, err error) {
	line, ok := bytes.CutSuffix(f.line, []byte("\r\n"))
	if !ok || len(line) == 0 {
		return false, errProtocol
	}
	typ, rest := line[0], string(line[1:])
	if f.chunked {
		n, err := strconv.Atoi(rest)
		if typ != ';' || err != nil || n < 0 {
			return false, errProtocol
		}
		if n == 0 {
			f.chunked = false
			return true, nil
		}
		f.skip = n + 2
		return false, nil
	}
	switch typ {
	case '+', '-', ':', ',', '#', '_', '(':
		return true, nil
	case '$', '!', '=':
		if rest == "?" && typ == '$' {
			f.chunked = true
			return false, nil
		}
		n, err := strconv.Atoi(rest)
		if err != nil {
			return false, errProtocol
		}
		if n < 0 { // RESP2 null bulk string
			return true, nil
		}
		f.skip = n + 2
		return false, nil
	case '*', '~', '>', '%', '|':
		if rest == "?" && typ != '|' {
			f.stack = append(f.stack, frame{left: -1})
			return false, nil
		}
		n, err := strconv.Atoi(rest)
		if err != nil || (n < 0 && typ == '|') {
			return false, errProtocol
		}
		if typ == '%' || typ == '|' {
			n *= 2
		}
		switch {
		case n < 0: // RESP2 null array
			return true, nil
		case n == 0:
			return typ != '|', nil
		}
		f.stack = append(f.stack, frame{left: n, attr: typ == '|'})
		return false, nil
	case '.':
		if len(f.stack) == 0 || f.stack[len(f.stack)-1].left != -1 || rest != "" {
			return false, errProtocol
		}
		f.stack = f.stack[:len(f.stack)-1]
		return true, nil
	}
	return false, errProtocol
}

// valueDone records that a value ended and reports whether that ended the
// reply: the values it completes ripple up through their aggregates.
func (f *replyFramer) valueDone() bool {
	for len(f.stack) > 0 {
		top := &f.stack[len(f.stack)-1]
		if top.left < 0 {
			return false // one more element of a streamed aggregate
		}
		if top.left--; top.left > 0 {
			return false
		}
		attr := top.attr
		f.stack = f.stack[:len(f.stack)-1]
		if attr {
			return false // the value it annotates is still to come
		}
	}
	return true
}
