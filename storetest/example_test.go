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
	store.Inject(storetest.OpGet, storetest.Fault{Delay: time.Hour})
	c, _ := readthrough.New[string, string](store, &readthrough.Options[string, string]{
		StoreTimeout: 10 * time.Millisecond,
	})
	v, err := c.GetOrLoad(context.Background(), "k", func(ctx context.Context, k string) (string, error) {
		return "from the loader", nil
	})
	fmt.Println(v, err)
	fmt.Println("store calls on a miss:", store.TotalCalls())
	// Output:
	// from the loader <nil>
	// store calls on a miss: 5
}
