//go:build readthrough_near

// TODO(lead): once Options.Near is committed, drop the build tags here
// and in near_off.go (delete it), so readthrough+near runs by default.

package mixed

import "github.com/readthrough-go/readthrough"

// newReadthroughNear builds readthrough with its near cache in front of
// redisstore.
func newReadthroughNear(env Env) (System, error) {
	return newReadthrough(env, func(o *readthrough.Options[int, Value]) {
		// Room for every key, so the near cache loses nothing to evictions
		// (as sturdyc and TinyLFU get); MaxAge bounds a copy while the
		// store cannot tell this process about other writers' changes.
		o.Near = readthrough.NearOptions{MaxEntries: 2 * env.Keys, MaxAge: env.TTL}
	})
}
