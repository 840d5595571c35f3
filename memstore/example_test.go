package memstore_test

import (
	"context"
	"fmt"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/memstore"
)

// memstore is the embedded store for one process, and the fake for tests:
// its Keys show what a cache wrote.
func Example() {
	store := memstore.New(memstore.WithMaxEntries(10_000))
	c, _ := readthrough.New[int, string](store, &readthrough.Options[int, string]{Namespace: "user"})
	_, _ = c.GetOrLoad(context.Background(), 7, func(ctx context.Context, id int) (string, error) {
		return "ada", nil
	})
	fmt.Println(store.Keys())
	// Output: [user:7]
}
