package momentostore

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/momentohq/client-sdk-go/momento"
	"github.com/momentohq/client-sdk-go/responses"
)

// Get implements [readthrough.Store].
func (s *Store) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	resp, err := s.client.Get(ctx, &momento.GetRequest{CacheName: s.cacheName, Key: momento.String(key)})
	if err != nil {
		return nil, false, mapError(ctx, "get", err)
	}
	switch r := resp.(type) {
	case *responses.GetHit:
		return r.ValueByte(), true, nil
	case *responses.GetMiss:
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("momentostore: get: unexpected response %T", resp)
}

// Set implements [readthrough.Store].
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ttl, err := checkWrite(ctx, key, value, ttl)
	if err != nil {
		return err
	}
	_, err = s.client.Set(ctx, &momento.SetRequest{
		CacheName: s.cacheName, Key: momento.String(key), Value: momento.Bytes(value), Ttl: ttl,
	})
	// A failed Set may still have landed: tell listeners either way.
	s.changed(key)
	if err != nil {
		return mapError(ctx, "set", err)
	}
	return nil
}

// SetIfAbsent implements [readthrough.Store]. It also reports true when
// key already holds exactly value: a retry of an acquisition that already
// succeeded. readthrough's lock tokens are unique per flight, so no other
// flight can match.
func (s *Store) SetIfAbsent(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ttl, err := checkWrite(ctx, key, value, ttl)
	if err != nil {
		return false, err
	}
	resp, err := s.client.SetIfAbsentOrEqual(ctx, &momento.SetIfAbsentOrEqualRequest{
		CacheName: s.cacheName, Key: momento.String(key), Value: momento.Bytes(value), Equal: momento.Bytes(value), Ttl: ttl,
	})
	if err != nil {
		s.changed(key) // the outcome is unknown
		return false, mapError(ctx, "set if absent", err)
	}
	switch resp.(type) {
	case *responses.SetIfAbsentOrEqualStored:
		s.changed(key)
		return true, nil
	case *responses.SetIfAbsentOrEqualNotStored:
		return false, nil
	}
	return false, fmt.Errorf("momentostore: set if absent: unexpected response %T", resp)
}

// Delete implements [readthrough.Store].
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := s.client.Delete(ctx, &momento.DeleteRequest{CacheName: s.cacheName, Key: momento.String(key)})
	s.changed(key)
	if err != nil {
		return mapError(ctx, "delete", err)
	}
	return nil
}

// CompareAndSwap implements [store.CompareAndSwapper]: SetIfEqual, which
// stores value with ttl (resetting the key's TTL) only while key holds
// old. When old and value together would not fit one request, it reads
// the key with its hash, compares it with old here, and swaps on the hash
// (SetIfPresentAndHashEqual), which sends value alone.
//
// The SDK never retries a SetIf, so after a timeout the outcome is
// unknown: the error says so, and the caller must not assume either way.
func (s *Store) CompareAndSwap(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	ttl, err := checkWrite(ctx, key, value, ttl)
	if err != nil {
		return false, err
	}
	return s.swap(ctx, "compare and swap", key, old, value, ttl)
}

// releaseTTL is how long a released lock lingers: Momento's shortest TTL.
const releaseTTL = time.Millisecond

// CompareAndDelete implements [store.CompareAndDeleter]. Momento has no
// conditional delete, so it swaps the key for itself with a 1 ms TTL,
// only if it still holds value: the key is gone a millisecond later.
func (s *Store) CompareAndDelete(ctx context.Context, key string, value []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return s.swap(ctx, "compare and delete", key, value, value, releaseTTL)
}

// swapOverhead bounds the bytes a SetIf request adds to its key and two
// values: tags, lengths, the TTL and the condition's wrapper.
const swapOverhead = 64

// swap stores value with ttl if key holds old, telling listeners when it
// may have.
func (s *Store) swap(ctx context.Context, op, key string, old, value []byte, ttl time.Duration) (bool, error) {
	var swapped bool
	var err error
	if len(key)+len(old)+len(value)+swapOverhead <= maxMessage {
		swapped, err = s.setIfEqual(ctx, key, old, value, ttl)
	} else {
		swapped, err = s.setIfHashEqual(ctx, key, old, value, ttl)
	}
	if swapped || err != nil { // an error leaves the outcome unknown
		s.changed(key)
	}
	if err != nil {
		return false, mapError(ctx, op, err)
	}
	return swapped, nil
}

func (s *Store) setIfEqual(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	resp, err := s.client.SetIfEqual(ctx, &momento.SetIfEqualRequest{
		CacheName: s.cacheName, Key: momento.String(key), Value: momento.Bytes(value), Equal: momento.Bytes(old), Ttl: ttl,
	})
	if err != nil {
		return false, err
	}
	switch resp.(type) {
	case *responses.SetIfEqualStored:
		return true, nil
	case *responses.SetIfEqualNotStored:
		return false, nil
	}
	return false, fmt.Errorf("unexpected response %T", resp)
}

// setIfHashEqual swaps on the hash of what the key held when it matched
// old: a change in between changes the hash, so the swap is refused.
func (s *Store) setIfHashEqual(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	got, err := s.client.GetWithHash(ctx, &momento.GetWithHashRequest{CacheName: s.cacheName, Key: momento.String(key)})
	if err != nil {
		return false, err
	}
	var hash []byte
	switch r := got.(type) {
	case *responses.GetWithHashMiss:
		return false, nil
	case *responses.GetWithHashHit:
		if !bytes.Equal(r.ValueByte(), old) {
			return false, nil
		}
		hash = r.HashByte()
	default:
		return false, fmt.Errorf("unexpected response %T", got)
	}
	resp, err := s.client.SetIfPresentAndHashEqual(ctx, &momento.SetIfPresentAndHashEqualRequest{
		CacheName: s.cacheName, Key: momento.String(key), Value: momento.Bytes(value), HashEqual: momento.Bytes(hash), Ttl: ttl,
	})
	if err != nil {
		return false, err
	}
	switch resp.(type) {
	case *responses.SetIfPresentAndHashEqualStored:
		return true, nil
	case *responses.SetIfPresentAndHashEqualNotStored:
		return false, nil
	}
	return false, fmt.Errorf("unexpected response %T", resp)
}
