package momentostore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/momentohq/client-sdk-go/momento"
)

// checkWrite rejects a done context, an entry too large and a TTL out of
// Momento's range, and rounds the TTL up to whole milliseconds.
func checkWrite(ctx context.Context, key string, value []byte, ttl time.Duration) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if n := len(key) + len(value); n > MaxEntrySize {
		return 0, fmt.Errorf("%w: %d bytes of key and value (at most %d)", ErrTooLarge, n, MaxEntrySize)
	}
	return roundTTL(ttl)
}

// roundTTL rounds ttl up to Momento's granularity, a millisecond. Zero
// would mean "the client's default TTL" to the SDK: it is never sent.
func roundTTL(ttl time.Duration) (time.Duration, error) {
	if ttl <= 0 || ttl > MaxTTL {
		return 0, fmt.Errorf("%w: %v (want above 0, at most %v)", ErrTTL, ttl, MaxTTL)
	}
	return (ttl + time.Millisecond - 1).Truncate(time.Millisecond), nil
}

// mapError turns the SDK's error into one of the package's, keeping the
// original in the chain. A call cut short by its own context reports the
// context's error too, so callers can tell they gave up.
func mapError(ctx context.Context, op string, err error) error {
	if cerr := ctxErr(ctx); cerr != nil {
		return fmt.Errorf("momentostore: %s: %w: %w", op, cerr, err)
	}
	var me momento.MomentoError
	if !errors.As(err, &me) {
		return fmt.Errorf("momentostore: %s: %w", op, err)
	}
	var kind error
	switch me.Code() {
	case momento.CacheNotFoundError:
		return fmt.Errorf("momentostore: %s: %w (create it, or use momentostore.Open): %w", op, ErrCacheNotFound, err)
	case momento.TimeoutError, momento.ServerUnavailableError, momento.ConnectionError,
		momento.InternalServerError, momento.CanceledError, momento.UnknownServiceError,
		momento.ClientResourceExhaustedError:
		kind = ErrUnavailable
	case momento.LimitExceededError:
		kind = ErrLimitExceeded
	case momento.AuthenticationError, momento.PermissionError:
		kind = ErrAuth
	default:
		return fmt.Errorf("momentostore: %s: %w", op, err)
	}
	return fmt.Errorf("momentostore: %s: %w: %w", op, kind, err)
}

// ctxErr is ctx.Err(), or DeadlineExceeded once ctx's deadline has passed:
// the SDK runs each call under a context of its own with the same
// deadline, whose timer may fire a moment before ctx's.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
