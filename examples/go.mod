module github.com/readthrough-go/readthrough/examples

go 1.25.0

require github.com/readthrough-go/readthrough v0.0.0

require golang.org/x/sync v0.22.0 // indirect

replace github.com/readthrough-go/readthrough => ../
