module github.com/readthrough-go/readthrough

go 1.25.0

require golang.org/x/sync v0.22.0

require go.yaml.in/yaml/v3 v3.0.5 // indirect

require (
	github.com/maypok86/otter/v2 v2.4.0
	github.com/stretchr/testify v1.12.1
)
