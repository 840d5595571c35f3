package momentostore_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/readthrough-go/readthrough"
	"github.com/readthrough-go/readthrough/momentostore"
)

type Product struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// ProductRepository is the service's own interface over its database.
type ProductRepository interface {
	Get(ctx context.Context, id int) (Product, error)
}

var errNoRow = errors.New("no row")

// Wrapping a repository call with GetOrLoad on Momento. Open reads
// MOMENTO_API_KEY, and creates the cache if it is missing.
func Example() {
	ctx := context.Background()
	store, err := momentostore.Open(ctx, "products", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	products, err := readthrough.New[int, Product](store, &readthrough.Options[int, Product]{
		Namespace:   "product", // keys "product:42", as in Momento's read-through pattern
		TTL:         10 * time.Minute,
		NegativeTTL: time.Minute,
		IsNotFound:  func(err error) bool { return errors.Is(err, errNoRow) },
	})
	if err != nil {
		log.Fatal(err) // a TTL above 24 hours fails here, not on every write
	}

	var repo ProductRepository // your database
	p, err := products.GetOrLoad(ctx, 42, repo.Get)
	if err != nil {
		log.Fatal(err)
	}
	log.Println(p.Name)
}
