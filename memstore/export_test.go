package memstore

// IndexSize returns how many entries the store indexes, expired ones not
// yet dropped included.
func IndexSize(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

// MapPeak returns the most entries the store's map has held since it was
// made: what its memory follows.
func MapPeak(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}
