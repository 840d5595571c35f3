package memstore_test

import (
	"context"
	"fmt"
	"time"

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

// printer prints what a store tells it.
type printer struct{}

func (printer) Connected(complete bool) { fmt.Println("connected, complete:", complete) }
func (printer) Changed(key string)      { fmt.Println("changed", key) }
func (printer) Disconnected(err error)  { fmt.Println("disconnected:", err) }

// A memstore tells its listeners of every change before the call that
// made it returns: here a write, an overwrite and a delete under the
// prefix, and none outside it.
func ExampleStore_Notify() {
	ctx := context.Background()
	s := memstore.New()
	stop, _ := s.Notify("user:", printer{})
	defer stop()
	_ = s.Set(ctx, "user:7", []byte("ada"), time.Minute)
	_ = s.Set(ctx, "user:7", []byte("grace"), time.Minute)
	_ = s.Set(ctx, "order:1", []byte("..."), time.Minute)
	_ = s.Delete(ctx, "user:7")
	// Output:
	// connected, complete: true
	// changed user:7
	// changed user:7
	// changed user:7
}
