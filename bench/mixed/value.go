package mixed

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Value is what every system caches: a JSON document of about
// Config.ValueSize bytes that says when and by which load it was made.
type Value struct {
	Key      int      `json:"key"`
	LoadedAt int64    `json:"loaded_at"` // UnixNano when the loader returned it
	Seq      uint64   `json:"seq"`       // process index << 40 | that process's load count
	Name     string   `json:"name"`
	Tags     []string `json:"tags"`
	Body     string   `json:"body"`
}

// words make a body that compresses like prose, not like a repeated byte:
// go-redis/cache compresses values over 64 bytes, and a filler of one
// letter would flatter it.
var words = strings.Fields(`stock price warehouse blue small large widget gadget shipping
	returns warranty colour steel cotton organic premium delivery region tax discount
	review rating seller brand model series edition bundle accessory battery charger
	cable adapter sleeve cover manual guide size weight width height depth volume
	available reserved backorder supplier category subcategory label barcode batch`)

// bodyLen is the body length that makes a Value's JSON about size bytes.
func bodyLen(size int) int {
	b, _ := json.Marshal(makeValue(99999, 0, 1<<62, 3<<40|99999)) // typical digits
	return max(size-len(b), 0)
}

// makeValue builds key's document; the body depends only on the key.
func makeValue(key int, bodyLen int, loadedAt int64, seq uint64) Value {
	r := rand.New(rand.NewPCG(uint64(key), 0x6d69786564))
	var sb strings.Builder
	sb.Grow(bodyLen + 16)
	for sb.Len() < bodyLen {
		sb.WriteString(words[r.IntN(len(words))])
		sb.WriteByte(' ')
	}
	body := sb.String()
	return Value{
		Key:      key,
		LoadedAt: loadedAt,
		Seq:      seq,
		Name:     "product " + strconv.Itoa(key),
		Tags:     []string{words[key%len(words)], words[(key/7)%len(words)]},
		Body:     body[:min(len(body), bodyLen)],
	}
}
