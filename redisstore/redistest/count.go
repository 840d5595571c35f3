package redistest

import (
	"context"
	"maps"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Counter counts what a client sends: round trips, and commands by name.
// Install it with [CountCommands]. It is safe for concurrent use.
type Counter struct {
	mu         sync.Mutex
	roundTrips int
	setup      int
	commands   map[string]int
}

// Counts is what a [Counter] saw.
type Counts struct {
	// RoundTrips counts the calls made on the client: one per command,
	// one per pipeline however many commands it holds. A command go-redis
	// retries internally counts once, and so does a pipeline a
	// ClusterClient splits over several nodes. Connection set-up is not
	// counted here but in Setup.
	RoundTrips int
	// Setup counts the round trips go-redis makes on each new connection,
	// which pass through the client's hooks too: those made only of HELLO,
	// AUTH, CLIENT, SELECT and READONLY.
	Setup int
	// Commands counts the commands of the round trips in RoundTrips, by
	// lower-case name ("get", "set", "evalsha"), pipelined or not.
	Commands map[string]int
}

// CountCommands installs a hook on client that counts its round trips and
// commands, and returns the counter. The hook stays for the client's life;
// call Reset to start again. Use it on a test's own client: it adds a hook
// to it.
func CountCommands(client redis.UniversalClient) *Counter {
	c := &Counter{commands: map[string]int{}}
	client.AddHook(countHook{c})
	return c
}

// Reset sets every count back to zero.
func (c *Counter) Reset() {
	c.mu.Lock()
	c.roundTrips, c.setup = 0, 0
	clear(c.commands)
	c.mu.Unlock()
}

// Snapshot returns the counts so far; the map is the caller's.
func (c *Counter) Snapshot() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Counts{RoundTrips: c.roundTrips, Setup: c.setup, Commands: maps.Clone(c.commands)}
}

func (c *Counter) add(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if isSetup(cmds) {
		c.setup++
		return
	}
	c.roundTrips++
	for _, cmd := range cmds {
		c.commands[cmd.Name()]++
	}
}

func isSetup(cmds []redis.Cmder) bool {
	for _, cmd := range cmds {
		if !setupCommands[cmd.Name()] {
			return false
		}
	}
	return len(cmds) > 0
}

// setupCommands are those go-redis sends on a new connection.
var setupCommands = map[string]bool{"hello": true, "auth": true, "client": true, "select": true, "readonly": true}

type countHook struct{ c *Counter }

func (countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.c.add(cmd)
		return next(ctx, cmd)
	}
}

func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.c.add(cmds...)
		return next(ctx, cmds)
	}
}
