package redisstore

// Test-only access to the backlog of abandoned commands.

// SetMaxAbandoned lowers the backlog limit, so a test can reach it with a
// few calls.
func (s *Store) SetMaxAbandoned(n int64) { s.maxAbandoned = n }

// Abandoned returns how many commands are still running after their
// callers returned.
func (s *Store) Abandoned() int64 { return s.abandoned.Load() }
