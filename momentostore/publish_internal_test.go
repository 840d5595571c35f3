package momentostore

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMessageRoundTrip(t *testing.T) {
	s := &Store{}
	s.init()
	keys := []string{"a", "product:42", strings.Repeat("k", 300)}
	msg, n := s.encodeMessage(keys, false)
	require.Equal(t, len(keys), n)
	from, got, flush, ok := decodeMessage(msg)
	require.True(t, ok)
	assert.Equal(t, s.id, from)
	assert.Equal(t, keys, got)
	assert.False(t, flush)

	msg, n = s.encodeMessage(keys[:1], true)
	require.Equal(t, 1, n)
	_, got, flush, ok = decodeMessage(msg)
	require.True(t, ok)
	assert.True(t, flush, "a failed publish owes subscribers a flush")
	assert.Equal(t, keys[:1], got)
}

func TestMessageSplitsAtMaxPublish(t *testing.T) {
	s := &Store{}
	s.init()
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = strings.Repeat("x", 100)
	}
	var all []string
	for len(keys) > 0 {
		msg, n := s.encodeMessage(keys, false)
		require.Positive(t, n)
		assert.LessOrEqual(t, len(msg), maxPublish)
		_, got, _, ok := decodeMessage(msg)
		require.True(t, ok)
		all = append(all, got...)
		keys = keys[n:]
	}
	assert.Len(t, all, 1000)

	// A key no message can hold is replaced by "anything may have changed".
	msg, n := s.encodeMessage([]string{strings.Repeat("x", maxPublish)}, false)
	assert.Equal(t, 1, n)
	_, got, flush, ok := decodeMessage(msg)
	assert.True(t, ok)
	assert.True(t, flush)
	assert.Empty(t, got)
}

func TestForeignMessagesDoNotDecode(t *testing.T) {
	for _, msg := range []string{"", "hello", "\x01short", "\x01" + "12345678" + "\x05ab", "\x02" + "12345678"} {
		_, _, _, ok := decodeMessage([]byte(msg))
		assert.False(t, ok, "%q", msg)
	}
}
