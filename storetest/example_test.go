package storetest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
	"github.com/readthrough-go/readthrough/storetest"
)

// A test of how a service behaves when its cache is slow: every store call
// hangs, and StoreTimeout bounds what callers pay for it.
func ExampleNewFaultyStore() {
	store := storetest.NewFaultyStore(memstore.New())
	store.InjectAll(storetest.Fault{Delay: time.Hour})
	c, _ := readthrough.New[string, string](store, &readthrough.Options[string, string]{
		StoreTimeout: 10 * time.Millisecond,
	})
	v, err := c.GetOrLoad(context.Background(), "k", func(ctx context.Context, k string) (string, error) {
		return "from the loader", nil
	})
	fmt.Println(v, err)
	fmt.Println("the store was tried:", store.TotalCalls() > 0)
	// Output:
	// from the loader <nil>
	// the store was tried: true
}

// A retried write must be idempotent: here the first SetIfAbsent takes
// effect but its reply is lost, as when a connection drops after the
// server applied the command, and the retry must still report success.
func ExampleFault_loseReply() {
	ctx := context.Background()
	store := storetest.NewFaultyStore(memstore.New())
	store.Inject(storetest.OpSetIfAbsent, storetest.Fault{LoseReply: true, Times: 1})
	_, err := store.SetIfAbsent(ctx, "lock", []byte("token"), time.Minute)
	fmt.Println(err)
	stored, err := store.SetIfAbsent(ctx, "lock", []byte("token"), time.Minute)
	fmt.Println(stored, err)
	// Output:
	// SetIfAbsent: reply lost: storetest: injected store failure
	// true <nil>
}
