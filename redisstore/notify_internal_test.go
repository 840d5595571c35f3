package redisstore

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func subsOf(prefixes ...string) []*sub {
	subs := make([]*sub, len(prefixes))
	for i, p := range prefixes {
		subs[i] = &sub{prefix: p}
	}
	return subs
}

// TestTrackedPrefixes: Redis rejects overlapping BCAST prefixes on one
// connection, so only the shortest of each overlapping group is tracked.
func TestTrackedPrefixes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{[]string{"a:"}, []string{"a:"}},
		{[]string{"a:", "a:"}, []string{"a:"}},
		{[]string{"a:b:", "a:", "c:"}, []string{"a:", "c:"}},
		{[]string{"a:b:", "a:c:", "b"}, []string{"a:b:", "a:c:", "b"}},
		{[]string{"ab", "a", "abc", "b", "ba"}, []string{"a", "b"}},
		{[]string{"x:", "", "y:"}, []string{""}},
		{[]string{"user:", "user"}, []string{"user"}},
		{[]string{"a:", "a;", "a:x"}, []string{"a:", "a;"}},
	} {
		assert.Equal(t, tc.want, trackedPrefixes(subsOf(tc.in...)), "%q", tc.in)
	}
}

func TestCovers(t *testing.T) {
	assert.True(t, covers([]string{""}, "anything"))
	assert.True(t, covers([]string{"a:", "b:"}, "b:x:"))
	assert.True(t, covers([]string{"a:"}, "a:"))
	assert.False(t, covers([]string{"a:b:"}, "a:"), "a narrower tracked prefix misses a:x")
	assert.False(t, covers(nil, ""))
}

// TestVerifyTracking: the reply of CLIENT TRACKINGINFO, as RESP3 (a map)
// and RESP2 (a flat array) give it, is accepted only when tracking is on,
// in BCAST mode, with the redirect and prefixes the session set.
func TestVerifyTracking(t *testing.T) {
	resp3 := func(flags []any, redirect int64, prefixes []any) any {
		return map[any]any{"flags": flags, "redirect": redirect, "prefixes": prefixes}
	}
	resp2 := func(flags []any, redirect int64, prefixes []any) any {
		return []any{"flags", flags, "redirect", redirect, "prefixes", prefixes}
	}
	for name, reply := range map[string]func([]any, int64, []any) any{"RESP3": resp3, "RESP2": resp2} {
		t.Run(name, func(t *testing.T) {
			on := []any{"on", "bcast"}
			assert.NoError(t, verifyTracking(reply(on, 0, []any{"b:", "a:"}), 0, []string{"a:", "b:"}))
			assert.NoError(t, verifyTracking(reply(on, 7, []any{}), 7, []string{""}), "BCAST with no PREFIX tracks every key")
			assert.NoError(t, verifyTracking(reply(on, 7, []any{""}), 7, []string{""}))
			assert.Error(t, verifyTracking(reply([]any{"off"}, -1, []any{}), 0, []string{""}), "off: the connection was replaced")
			assert.Error(t, verifyTracking(reply([]any{"on"}, 0, []any{}), 0, []string{""}), "not BCAST")
			assert.Error(t, verifyTracking(reply([]any{"on", "bcast", "broken_redirect"}, 7, []any{"a:"}), 7, []string{"a:"}))
			assert.Error(t, verifyTracking(reply(on, 8, []any{"a:"}), 7, []string{"a:"}), "redirects elsewhere")
			assert.Error(t, verifyTracking(reply(on, 0, []any{"a:"}), 0, []string{"a:", "b:"}), "a prefix missing")
		})
	}
	assert.Error(t, verifyTracking("garbage", 0, []string{""}))
}

func TestFindClient(t *testing.T) {
	list := "id=3 addr=127.0.0.1:5 laddr=127.0.0.1:6379 fd=8 name= age=1 db=0\n" +
		"id=12 addr=127.0.0.1:6 laddr=127.0.0.1:6379 fd=9 name=readthrough-notify-x-recv age=0 db=0 sub=1\n" +
		"id=14 addr=127.0.0.1:7 laddr=127.0.0.1:6379 fd=10 name=readthrough-notify-x-recvX age=0 db=0\n"
	id, ok := findClient(list, "readthrough-notify-x-recv")
	assert.True(t, ok)
	assert.EqualValues(t, 12, id)
	_, ok = findClient(list, "readthrough-notify-y-recv")
	assert.False(t, ok)
	_, ok = findClient("", "x")
	assert.False(t, ok)
}
