package readthrough

import "errors"

// isNotFound reports whether a loader error means "no such key".
func (c *Cache[K, V]) isNotFound(err error) bool {
	return errors.Is(err, ErrNotFound) || c.cfg.IsNotFound != nil && c.cfg.IsNotFound(err)
}

// notFoundAs is the one error a Cache returns for every not-found: target
// (Options.NotFoundError) wrapped so it also matches ErrNotFound, or
// ErrNotFound itself. It is built once, so a cached not-found costs no
// allocation.
func notFoundAs(target error) error {
	if target == nil || errors.Is(target, ErrNotFound) {
		if target == nil {
			return ErrNotFound
		}
		return target
	}
	return &notFoundError{target}
}

type notFoundError struct{ err error }

func (e *notFoundError) Error() string        { return "readthrough: not found: " + e.err.Error() }
func (e *notFoundError) Unwrap() error        { return e.err }
func (e *notFoundError) Is(target error) bool { return target == ErrNotFound }
