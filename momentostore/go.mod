module github.com/readthrough-go/readthrough/momentostore

go 1.26.0

require (
	github.com/momentohq/client-sdk-go v1.40.1
	github.com/readthrough-go/readthrough v0.0.0
	github.com/stretchr/testify v1.11.1
)

replace github.com/readthrough-go/readthrough => ../
