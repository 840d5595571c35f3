// Package fakemomento is an in-process Momento service for tests: a real
// gRPC server on loopback that the official Go SDK talks to as it would to
// Momento, with the service and method names, metadata and wire messages
// the SDK uses (decoded and encoded by hand, see wire.go), so what is under
// test is the real client: its retries, timeouts, connection handling and
// streams.
//
// It serves the control plane (CreateCache, DeleteCache, ListCaches), the
// data plane's scalar operations (Get, GetWithHash, GetBatch, Set,
// SetBatch, SetIf, SetIfHash, Delete), Ping, and Topics (Publish,
// Subscribe). TTLs are honoured on a clock tests can move with
// [Server.Advance]; messages above 5,243,000 bytes, the SDK's and the
// service's limit, are refused.
//
// Faults reproduce what the real service and network do: [Server.Inject]
// makes a method answer an error status, never answer, or break a stream
// part way; [Server.Stop] refuses connections until [Server.Restart];
// [Silent] accepts connections and never speaks; a missing cache answers
// NotFound; and the topic methods inject discontinuities, sequence gaps
// and page changes into live subscriptions.
package fakemomento

import (
	"context"
	"crypto/sha256"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/momentohq/client-sdk-go/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// MaxMessageSize is the largest gRPC message the service accepts or sends:
// the SDK's default limit, which Momento's service shares.
const MaxMessageSize = 5_243_000

// Fault is what an injected method does instead of its work.
type Fault struct {
	// Code, unless codes.OK, is the status the call fails with.
	Code codes.Code
	// Hang makes the call never answer: it ends only when the client
	// gives up (its deadline or cancellation).
	Hang bool
	// After, for a server-streaming method, is how many messages are sent
	// before the fault strikes: a stream that breaks part way.
	After int
}

// Server is a fake Momento service. Its methods are safe for concurrent
// use.
type Server struct {
	addr string

	mu          sync.Mutex
	lis         net.Listener
	srv         *grpc.Server
	offset      time.Duration // added to the real clock: Advance
	caches      map[string]map[string]item
	topics      map[topicKey]*topic
	calls       map[string]int
	readConcern map[string]string // the last read-concern header, by method
	faults      map[string]Fault
}

type item struct {
	value   []byte
	ttl     time.Duration // as the last write gave it
	expires time.Time
}

// Start starts a Server on a loopback port with the named caches, and
// stops it when the test ends.
func Start(t testing.TB, caches ...string) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fakemomento: listen: %v", err)
	}
	s := &Server{
		addr:        lis.Addr().String(),
		caches:      map[string]map[string]item{},
		topics:      map[topicKey]*topic{},
		calls:       map[string]int{},
		readConcern: map[string]string{},
		faults:      map[string]Fault{},
	}
	for _, c := range caches {
		s.caches[c] = map[string]item{}
	}
	s.serve(lis)
	t.Cleanup(s.Stop)
	return s
}

// serve starts a gRPC server on lis. Its state (caches, topics, counters)
// lives in s, so it survives a Stop and Restart.
func (s *Server) serve(lis net.Listener) {
	srv := grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.UnknownServiceHandler(s.unknown),
	)
	for _, sd := range s.services() {
		srv.RegisterService(sd, nil)
	}
	s.mu.Lock()
	s.lis, s.srv = lis, srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// Credentials returns a credential provider for this server: plaintext,
// with every endpoint (control, cache, topics) at Addr.
func (s *Server) Credentials() auth.CredentialProvider { return CredentialsFor(s.addr) }

// CredentialsFor returns a plaintext credential provider for addr, through
// the SDK's provider for momento-local, the only one whose endpoints may be
// insecure.
func CredentialsFor(addr string) auth.CredentialProvider {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		panic(err)
	}
	p, err := strconv.ParseUint(port, 10, 32)
	if err != nil {
		panic(err)
	}
	creds, err := auth.NewMomentoLocalProvider(&auth.MomentoLocalConfig{Hostname: host, Port: uint(p)})
	if err != nil {
		panic(err)
	}
	return creds
}

// Stop closes the listener and every connection: calls fail, and new
// connections are refused, until Restart. Live streams end with an error.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv, s.lis = nil, nil
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Restart listens again on the same address, after Stop.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatalf("fakemomento: listen again on %s: %v", s.addr, err)
	}
	s.serve(lis)
}

// RefusedAddr returns a loopback address where nothing listens: every
// connection is refused.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// Silent returns a loopback address that accepts connections and never
// says a word: a client waits for the HTTP/2 handshake until it gives up.
// accepted receives (without blocking) once per connection accepted.
func Silent(t testing.TB) (addr string, accepted <-chan struct{}) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	acc := make(chan struct{}, 1)
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case acc <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String(), acc
}

// CreateCache creates a cache, as the console would.
func (s *Server) CreateCache(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.caches[name]; !ok {
		s.caches[name] = map[string]item{}
	}
}

// DeleteCache deletes a cache and its items.
func (s *Server) DeleteCache(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.caches, name)
}

// HasCache reports whether the cache exists.
func (s *Server) HasCache(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.caches[name]
	return ok
}

// Advance moves the service's clock forward: items whose TTL has passed
// are gone.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset += d
}

// Item returns what key holds in cache, and its remaining TTL.
func (s *Server) Item(cache, key string) (value []byte, ttl time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.live(s.caches[cache], []byte(key))
	if !ok {
		return nil, 0, false
	}
	return append([]byte(nil), it.value...), it.expires.Sub(s.now()), true
}

// LastTTL returns the TTL the last write of key in cache gave it, expired
// or not.
func (s *Server) LastTTL(cache, key string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caches[cache][key].ttl
}

// Inject makes method (by its short name: "Get", "SetIf", "GetBatch",
// "CreateCache", "Subscribe", ...) fail with f until Heal.
func (s *Server) Inject(method string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[method] = f
}

// Heal removes every injected fault.
func (s *Server) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
}

// Calls returns how many calls of method the server received, each
// attempt of a retried call counted.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// ControlCalls returns how many control-plane calls (CreateCache,
// DeleteCache, ListCaches) the server received: Momento allows only a few
// per second per region.
func (s *Server) ControlCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls["CreateCache"] + s.calls["DeleteCache"] + s.calls["ListCaches"]
}

// ResetCalls zeroes the call counters.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.calls)
}

// ReadConcern returns the read-concern header of the last call of method,
// or "" when it carried none.
func (s *Server) ReadConcern(method string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readConcern[method]
}

func (s *Server) now() time.Time { return time.Now().Add(s.offset) }

// live returns key's item unless it has expired, with s.mu held.
func (s *Server) live(items map[string]item, key []byte) (item, bool) {
	it, ok := items[string(key)]
	if ok && !s.now().Before(it.expires) {
		delete(items, string(key))
		return item{}, false
	}
	return it, ok
}

// hash is the service's hash of a value, for GetWithHash and SetIfHash.
// The client treats it as opaque bytes.
func hash(v []byte) []byte {
	h := sha256.Sum256(v)
	return h[:]
}

// enter counts a call, records its read concern and returns its fault.
func (s *Server) enter(ctx context.Context, method string) Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[method]++
	rc := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("read-concern"); len(v) > 0 {
			rc = v[len(v)-1]
		}
	}
	s.readConcern[method] = rc
	return s.faults[method]
}

// strike runs an injected fault that strikes before any answer.
func strike(ctx context.Context, f Fault) error {
	if f.Hang {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	if f.Code != codes.OK {
		return status.Error(f.Code, "fakemomento: injected "+f.Code.String())
	}
	return nil
}

// cacheNotFound is how the service says a cache is missing: NotFound with
// no "err" trailer (which would name an item or a store instead).
func cacheNotFound(name string) error {
	return status.Error(codes.NotFound, "cache not found: "+name)
}

func (s *Server) unknown(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	s.mu.Lock()
	s.calls[method]++
	s.mu.Unlock()
	return status.Error(codes.Unimplemented, "fakemomento: not implemented: "+method)
}
