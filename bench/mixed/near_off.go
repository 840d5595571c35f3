//go:build !readthrough_near

package mixed

// newReadthroughNear is nil until Options.Near is committed: Run then
// leaves readthrough+near out. Build with -tags readthrough_near to run it
// (near.go).
var newReadthroughNear func(Env) (System, error)
