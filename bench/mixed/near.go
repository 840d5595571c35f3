package mixed

import "github.com/readthrough-go/readthrough"

// newReadthroughNear builds readthrough with its near cache in front of
// redisstore.
func newReadthroughNear(env Env) (System, error) {
	return newReadthrough(env, func(o *readthrough.Options[int, Value]) {
		// Room for every key, as the peers get: the near cache then loses
		// nothing to evictions, and what is measured is the hit path and
		// invalidation, not the admission policy. MaxAge stays at its
		// default: Redis's tracking covers every change while the link is
		// up, and MaxAge bounds a copy only while it is down.
		o.Near = readthrough.NearOptions{MaxEntries: env.Keys}
	})
}
