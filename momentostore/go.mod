module github.com/readthrough-go/readthrough/momentostore

go 1.25.0

require (
	github.com/momentohq/client-sdk-go v1.40.1
	github.com/readthrough-go/readthrough v0.1.0
	github.com/stretchr/testify v1.12.1
	google.golang.org/grpc v1.63.0
	google.golang.org/protobuf v1.33.0
)
