# Every module tied together by go.work. momentostore is apart: its SDK is
# not on every module proxy (see test-momento).
MODULES := . redisstore bench examples otelreadthrough
GO ?= go
STATICCHECK ?= v0.8.2

.PHONY: help test fmt-check vet unit lint fuzz demo test-momento

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

test: fmt-check vet unit ## gofmt check, go vet and the race-enabled tests of every module

fmt-check: ## fail if any file needs gofmt
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet: ## go vet every module
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

unit: ## go test -race -shuffle=on in every module
	@for m in $(MODULES); do (cd $$m && $(GO) test -race -shuffle=on ./...) || exit 1; done

lint: ## staticcheck every module
	@for m in $(MODULES); do (cd $$m && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...) || exit 1; done

fuzz: ## fuzz the entry decoder and key derivation for 30s each
	$(GO) test -fuzz FuzzDecode -fuzztime 30s ./internal/entry
	$(GO) test -fuzz FuzzStoreKey -fuzztime 30s .

demo: ## run the product lookup demo on the in-memory store
	$(GO) run ./examples/productlookup

test-momento: ## vet and test momentostore against the real Momento SDK (needs the SDK: an untracked momentostore/go.work pointing at a checkout, else the module proxy)
	@cd momentostore && if [ -f go.work ]; then \
		$(GO) vet ./... && $(GO) test -race -shuffle=on ./...; \
	else \
		GOWORK=off $(GO) vet -mod=mod ./... && GOWORK=off $(GO) test -mod=mod -race -shuffle=on ./...; \
	fi
