package readthrough

import (
	"strings"
	"testing"
)

// FuzzStoreKey: no value key can ever be a lock key of an earlier release
// (which may share the store during a rolling upgrade), whatever the
// namespace and key; keys stay bounded; distinct short keys stay distinct.
func FuzzStoreKey(f *testing.F) {
	for _, s := range [][3]string{
		{"product", "42", "43"}, {"", "x", "x:lock"}, {"", "\x00lock:x", "x"},
		{"", "", "\x00"}, {"n", strings.Repeat("k", MaxKeyLen+1), "k"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, ns, k1, k2 string) {
		if strings.IndexByte(ns, 0) >= 0 {
			t.Skip("New rejects a namespace with NUL")
		}
		v1, v2 := storeKey(ns, k1), storeKey(ns, k2)
		for _, v := range []string{v1, v2} {
			if strings.HasPrefix(v, lockPrefix[:1]) {
				t.Fatalf("value key %q starts like a lock key", v)
			}
		}
		if limit := len(ns) + 1 + max(MaxKeyLen, len(hashPrefix)+64); len(v1) > limit {
			t.Fatalf("key of %d bytes is above %d", len(v1), limit)
		}
		plain := func(k string) bool { return len(k) <= MaxKeyLen && !strings.HasPrefix(k, "\x00") }
		if k1 != k2 && plain(k1) && plain(k2) && v1 == v2 {
			t.Fatalf("distinct keys %q and %q share store key %q", k1, k2, v1)
		}
	})
}
