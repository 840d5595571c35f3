package readthrough

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unsafe"
)

// MaxKeyLen is the longest derived key, in bytes, that is used as it is.
// A longer one (KeyFunc output, or the decimal or string form of K) is
// replaced by "sha256:" and its hex SHA-256, so store keys stay short
// whatever the caller passes; the namespace is kept in front.
const MaxKeyLen = 250

// lockPrefix started the separate lock keys of releases before leases
// lived in the value key; processes of such a release may still share the
// store during a rolling upgrade. Value keys never start with it: a
// namespace may not contain NUL, and with no namespace a key that starts
// with NUL is hashed.
const lockPrefix = "\x00lock:"

const hashPrefix = "sha256:"

// storeKey joins a namespace and a derived key into a store key.
func storeKey(namespace, k string) string {
	if len(k) > MaxKeyLen || (namespace == "" && strings.HasPrefix(k, lockPrefix[:1])) {
		sum := sha256.Sum256([]byte(k))
		k = hashPrefix + hex.EncodeToString(sum[:])
	}
	if namespace == "" {
		return k
	}
	return namespace + ":" + k
}

// defaultKeyFunc returns the key function for K when the caller gave none:
// K's string form for string kinds, its decimal form for integer kinds,
// including named types such as `type SKU string`. Other kinds have no
// stable, obvious string form, so they need a KeyFunc.
func defaultKeyFunc[K comparable]() (func(K) string, error) {
	t := reflect.TypeFor[K]()
	// The conversions below read K's memory as its underlying kind, which
	// is exactly its layout; this avoids boxing K on the hot path.
	switch t.Kind() {
	case reflect.String:
		return func(k K) string { return *(*string)(unsafe.Pointer(&k)) }, nil
	case reflect.Int:
		return func(k K) string { return strconv.Itoa(*(*int)(unsafe.Pointer(&k))) }, nil
	case reflect.Int8:
		return func(k K) string { return strconv.FormatInt(int64(*(*int8)(unsafe.Pointer(&k))), 10) }, nil
	case reflect.Int16:
		return func(k K) string { return strconv.FormatInt(int64(*(*int16)(unsafe.Pointer(&k))), 10) }, nil
	case reflect.Int32:
		return func(k K) string { return strconv.FormatInt(int64(*(*int32)(unsafe.Pointer(&k))), 10) }, nil
	case reflect.Int64:
		return func(k K) string { return strconv.FormatInt(*(*int64)(unsafe.Pointer(&k)), 10) }, nil
	case reflect.Uint:
		return func(k K) string { return strconv.FormatUint(uint64(*(*uint)(unsafe.Pointer(&k))), 10) }, nil
	case reflect.Uint8:
		return func(k K) string { return strconv.FormatUint(uint64(*(*uint8)(unsafe.Pointer(&k))), 10) }, nil
	case reflect.Uint16:
		return func(k K) string { return strconv.FormatUint(uint64(*(*uint16)(unsafe.Pointer(&k))), 10) }, nil
	case reflect.Uint32:
		return func(k K) string { return strconv.FormatUint(uint64(*(*uint32)(unsafe.Pointer(&k))), 10) }, nil
	case reflect.Uint64:
		return func(k K) string { return strconv.FormatUint(*(*uint64)(unsafe.Pointer(&k)), 10) }, nil
	case reflect.Uintptr:
		return func(k K) string { return strconv.FormatUint(uint64(*(*uintptr)(unsafe.Pointer(&k))), 10) }, nil
	}
	return nil, fmt.Errorf("%w: key type %v has no default key function; set Options.KeyFunc", ErrInvalidOptions, t)
}
