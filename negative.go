package readthrough

import "errors"

// isNotFound reports whether a loader error means "no such key".
func (c *Cache[K, V]) isNotFound(err error) bool {
	return errors.Is(err, ErrNotFound) || c.cfg.IsNotFound != nil && c.cfg.IsNotFound(err)
}

// notFound makes err match ErrNotFound, keeping err itself in the chain so
// callers can still match it (sql.ErrNoRows, say).
func notFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return err
	}
	return &notFoundError{err}
}

type notFoundError struct{ err error }

func (e *notFoundError) Error() string        { return "readthrough: not found: " + e.err.Error() }
func (e *notFoundError) Unwrap() error        { return e.err }
func (e *notFoundError) Is(target error) bool { return target == ErrNotFound }
