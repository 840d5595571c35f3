package fakemomento

import (
	"bytes"
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// ECacheResult, from cacheclient.proto.
const (
	resultOk   = 1
	resultHit  = 2
	resultMiss = 3
)

// services describes the four gRPC services the SDK calls, by the names in
// Momento's .proto files.
func (s *Server) services() []*grpc.ServiceDesc {
	return []*grpc.ServiceDesc{
		{
			ServiceName: "cache_client.Scs",
			HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{
				s.unary("Get", s.get),
				s.unary("GetWithHash", s.getWithHash),
				s.unary("Set", s.set),
				s.unary("SetIf", s.setIf),
				s.unary("SetIfHash", s.setIfHash),
				s.unary("Delete", s.delete),
			},
			Streams: []grpc.StreamDesc{
				s.stream("GetBatch", s.getBatch),
				s.stream("SetBatch", s.setBatch),
			},
		},
		{
			ServiceName: "control_client.ScsControl",
			HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{
				s.unary("CreateCache", s.createCache),
				s.unary("DeleteCache", s.deleteCache),
				s.unary("ListCaches", s.listCaches),
			},
		},
		{
			ServiceName: "cache_client.Ping",
			HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{
				s.unary("Ping", func(context.Context, message) ([]byte, error) { return nil, nil }),
			},
		},
		{
			ServiceName: "cache_client.pubsub.Pubsub",
			HandlerType: (*any)(nil),
			Methods:     []grpc.MethodDesc{s.unary("Publish", s.publish)},
			Streams:     []grpc.StreamDesc{s.stream("Subscribe", s.subscribe)},
		},
	}
}

type unaryFunc func(ctx context.Context, req message) ([]byte, error)

// unary wraps a handler of decoded requests as a gRPC method: it counts
// the call and runs any injected fault first.
func (s *Server) unary(name string, fn unaryFunc) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			if err := strike(ctx, s.enter(ctx, name)); err != nil {
				return nil, err
			}
			req, err := decode(in)
			if err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			out, err := fn(ctx, req)
			if err != nil {
				return nil, err
			}
			return &out, nil
		},
	}
}

type streamFunc func(ctx context.Context, req message, send func([]byte) error) error

// stream wraps a server-streaming handler: one request, many responses. A
// fault with After > 0 strikes in place of response number After+1.
func (s *Server) stream(name string, fn streamFunc) grpc.StreamDesc {
	return grpc.StreamDesc{
		StreamName:    name,
		ServerStreams: true,
		Handler: func(_ any, st grpc.ServerStream) error {
			var in []byte
			if err := st.RecvMsg(&in); err != nil {
				return err
			}
			ctx := st.Context()
			f := s.enter(ctx, name)
			if f.After == 0 {
				if err := strike(ctx, f); err != nil {
					return err
				}
			}
			req, err := decode(in)
			if err != nil {
				return status.Error(codes.InvalidArgument, err.Error())
			}
			sent := 0
			send := func(b []byte) error {
				if f.After > 0 && sent == f.After {
					if err := strike(ctx, f); err != nil {
						return err
					}
				}
				sent++
				return st.SendMsg(&b)
			}
			return fn(ctx, req, send)
		},
	}
}

// inCache runs fn on the items of the cache named by the call's "cache"
// header, with s.mu held.
func (s *Server) inCache(ctx context.Context, fn func(items map[string]item) ([]byte, error)) ([]byte, error) {
	name := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("cache"); len(v) > 0 {
			name = v[0]
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	items, ok := s.caches[name]
	if !ok {
		return nil, cacheNotFound(name)
	}
	return fn(items)
}

// put stores an item with s.mu held. The service refuses a zero TTL (the
// SDK never sends one: it substitutes its default).
func (s *Server) put(items map[string]item, key, value []byte, ttlMillis uint64) error {
	if len(key) == 0 {
		return status.Error(codes.InvalidArgument, "key must not be empty")
	}
	if ttlMillis == 0 {
		return status.Error(codes.InvalidArgument, "ttl must be positive")
	}
	ttl := time.Duration(ttlMillis) * time.Millisecond
	items[string(key)] = item{value: bytes.Clone(value), ttl: ttl, expires: s.now().Add(ttl)}
	return nil
}

// _GetRequest{cache_key = 1} -> _GetResponse{result = 1, cache_body = 2}
func (s *Server) get(ctx context.Context, req message) ([]byte, error) {
	return s.inCache(ctx, func(items map[string]item) ([]byte, error) {
		return s.getResponse(items, req.bytes(1)), nil
	})
}

func (s *Server) getResponse(items map[string]item, key []byte) []byte {
	it, ok := s.live(items, key)
	if !ok {
		return appendUint(nil, 1, resultMiss)
	}
	return appendBytes(appendUint(nil, 1, resultHit), 2, it.value, false)
}

// _GetWithHashRequest{cache_key = 1} -> _GetWithHashResponse{oneof found
// = 1 {value = 1, hash = 2}, missing = 2}
func (s *Server) getWithHash(ctx context.Context, req message) ([]byte, error) {
	return s.inCache(ctx, func(items map[string]item) ([]byte, error) {
		it, ok := s.live(items, req.bytes(1))
		if !ok {
			return appendBytes(nil, 2, nil, true), nil
		}
		found := appendBytes(appendBytes(nil, 1, it.value, false), 2, hash(it.value), false)
		return appendBytes(nil, 1, found, true), nil
	})
}

// _GetBatchRequest{repeated _GetRequest items = 1} -> stream _GetResponse
func (s *Server) getBatch(ctx context.Context, req message, send func([]byte) error) error {
	var out [][]byte
	_, err := s.inCache(ctx, func(items map[string]item) ([]byte, error) {
		for _, raw := range req.all(1) {
			g, err := decode(raw)
			if err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			out = append(out, s.getResponse(items, g.bytes(1)))
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	for _, b := range out {
		if err := send(b); err != nil {
			return err
		}
	}
	return nil
}

// _SetRequest{cache_key = 1, cache_body = 2, ttl_milliseconds = 3} ->
// _SetResponse{result = 1}
func (s *Server) set(ctx context.Context, req message) ([]byte, error) {
	return s.inCache(ctx, func(items map[string]item) ([]byte, error) {
		if err := s.put(items, req.bytes(1), req.bytes(2), req.uint(3)); err != nil {
			return nil, err
		}
		return appendUint(nil, 1, resultOk), nil
	})
}

// _SetBatchRequest{repeated _SetRequest items = 1} -> stream _SetResponse
func (s *Server) setBatch(ctx context.Context, req message, send func([]byte) error) error {
	n := 0
	_, err := s.inCache(ctx, func(items map[string]item) ([]byte, error) {
		for _, raw := range req.all(1) {
			r, err := decode(raw)
			if err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			if err := s.put(items, r.bytes(1), r.bytes(2), r.uint(3)); err != nil {
				return nil, err
			}
			n++
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	for range n {
		if err := send(appendUint(nil, 1, resultOk)); err != nil {
			return err
		}
	}
	return nil
}

// setIfResponse is _SetIfResponse{oneof stored = 1, not_stored = 2}, and
// _SetIfHashResponse with stored{new_hash = 1}.
func setIfResponse(stored bool, newHash []byte) []byte {
	if stored {
		return appendBytes(nil, 1, appendBytes(nil, 1, newHash, false), true)
	}
	return appendBytes(nil, 2, nil, true)
}

// _SetIfRequest{cache_key = 1, cache_body = 2, ttl_milliseconds = 3, oneof
// condition: present = 4, present_and_not_equal = 5, absent = 6, equal =
// 7, absent_or_equal = 8, not_equal = 9}; each comparison carries
// value_to_check = 1.
func (s *Server) setIf(ctx context.Context, req message) ([]byte, error) {
	return s.inCache(ctx, func(items map[string]item) ([]byte, error) {
		key := req.bytes(1)
		cur, present := s.live(items, key)
		var num protowire.Number
		for n := protowire.Number(4); n <= 9; n++ {
			if req.has(n) {
				num = n
			}
		}
		cond, err := req.sub(num)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		equal := present && bytes.Equal(cur.value, cond.bytes(1))
		var ok bool
		switch num {
		case 4:
			ok = present
		case 5:
			ok = present && !equal
		case 6:
			ok = !present
		case 7:
			ok = equal
		case 8:
			ok = !present || equal
		case 9:
			ok = !equal
		default:
			return nil, status.Error(codes.InvalidArgument, "SetIf without a condition")
		}
		if ok {
			if err := s.put(items, key, req.bytes(2), req.uint(3)); err != nil {
				return nil, err
			}
		}
		return setIfResponse(ok, nil), nil
	})
}

// _SetIfHashRequest{cache_key = 1, cache_body = 2, ttl_milliseconds = 3,
// oneof condition: present_and_not_hash_equal = 4, present_and_hash_equal
// = 5, absent_or_hash_equal = 6, absent_or_not_hash_equal = 7,
// unconditional = 8}; each comparison carries hash_to_check = 1.
func (s *Server) setIfHash(ctx context.Context, req message) ([]byte, error) {
	return s.inCache(ctx, func(items map[string]item) ([]byte, error) {
		key := req.bytes(1)
		cur, present := s.live(items, key)
		var num protowire.Number
		for n := protowire.Number(4); n <= 8; n++ {
			if req.has(n) {
				num = n
			}
		}
		cond, err := req.sub(num)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		equal := present && bytes.Equal(hash(cur.value), cond.bytes(1))
		var ok bool
		switch num {
		case 4:
			ok = present && !equal
		case 5:
			ok = equal
		case 6:
			ok = !present || equal
		case 7:
			ok = !equal
		case 8:
			ok = true
		default:
			return nil, status.Error(codes.InvalidArgument, "SetIfHash without a condition")
		}
		if !ok {
			return setIfResponse(false, nil), nil
		}
		if err := s.put(items, key, req.bytes(2), req.uint(3)); err != nil {
			return nil, err
		}
		return setIfResponse(true, hash(req.bytes(2))), nil
	})
}

// _DeleteRequest{cache_key = 1} -> _DeleteResponse{}
func (s *Server) delete(ctx context.Context, req message) ([]byte, error) {
	return s.inCache(ctx, func(items map[string]item) ([]byte, error) {
		delete(items, string(req.bytes(1)))
		return nil, nil
	})
}

// _CreateCacheRequest{cache_name = 1} -> _CreateCacheResponse{}, or
// AlreadyExists.
func (s *Server) createCache(_ context.Context, req message) ([]byte, error) {
	name := req.str(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.caches[name]; ok {
		return nil, status.Error(codes.AlreadyExists, "cache already exists: "+name)
	}
	s.caches[name] = map[string]item{}
	return nil, nil
}

// _DeleteCacheRequest{cache_name = 1} -> _DeleteCacheResponse{}, or
// NotFound.
func (s *Server) deleteCache(_ context.Context, req message) ([]byte, error) {
	name := req.str(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.caches[name]; !ok {
		return nil, cacheNotFound(name)
	}
	delete(s.caches, name)
	return nil, nil
}

// _ListCachesRequest{} -> _ListCachesResponse{repeated _Cache cache = 1
// {cache_name = 1}}
func (s *Server) listCaches(context.Context, message) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []byte
	for name := range s.caches {
		out = appendBytes(out, 1, appendBytes(nil, 1, []byte(name), false), true)
	}
	return out, nil
}
