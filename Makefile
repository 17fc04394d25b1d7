# Verbatim. The two commands: `make demo` (needs only Go) and `make test`
# (real Kafka, ClickHouse, MinIO and Vault on loopback; also Java 17 and Maven).
GO ?= go
STACK := deploy/local/stack.sh

.PHONY: all build demo test fuzz loadtest up status down env schemas schemas-check schemas-baseline fmt vet clean clean-stack

all: build

## build: bin/verbatim with every codec (G.729 through libbcg729, installed when missing)
build:
	GO=$(GO) deploy/local/build.sh

## demo: the embedded default end to end on the sample captures (starts ClickHouse for search)
demo:
	deploy/local/demo.sh

## test: start the local stack, run unit + integration tests (-race), schema and compose checks
test:
	deploy/local/test.sh

## loadtest: the whole pipeline at scale on the local stack (CALLS=5000 DURATION=10s): CPU seconds per stage
loadtest:
	deploy/local/loadtest.sh

## fuzz: every fuzz target for FUZZTIME each (default 60s), e.g. make fuzz FUZZTIME=10m
fuzz:
	deploy/local/fuzz.sh

## up / status / down: the local stack (see deploy/README.md)
up:
	$(STACK) up
status:
	$(STACK) status
down:
	$(STACK) down
env:
	@$(STACK) env

## schemas: regenerate Go code from schemas/proto
schemas:
	cd schemas && PATH="$$(../deploy/tools/tools.sh):$$PATH" buf generate
schemas-check:
	schemas/check.sh
## schemas-baseline: accept the current protos as the compatibility baseline
schemas-baseline:
	cd schemas && PATH="$$(../deploy/tools/tools.sh):$$PATH" buf build -o baseline/v1.binpb

fmt:
	gofmt -w $$(git ls-files '*.go')
vet:
	$(GO) vet ./...

clean:
	rm -rf bin .verbatim
## clean-stack: stop the stack and delete its data and generated credentials
clean-stack: down
	rm -rf .stack
