module github.com/readthrough-go/readthrough/examples

go 1.25.0

require github.com/readthrough-go/readthrough v0.0.0

replace github.com/readthrough-go/readthrough => ../
