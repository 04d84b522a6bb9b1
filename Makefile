# volplug: `make demo` and `make test` do all set-up on a fresh Debian machine
# (as root); see README.md.
GO      ?= go
BIN     := bin/volplug
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The suites share loop devices and the mount table; each package runs its
# root tests on its own pool, so packages may run in parallel.
TESTFLAGS ?= -race -count=1 -timeout 15m

.PHONY: all build deps demo test unit bench vet clean fuzz hostile

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/volplug

# System packages, then the test S3 server (versitygw, built once into
# bin/tools/).
deps:
	@./scripts/install-deps.sh
	@./scripts/install-versitygw.sh

demo: deps build
	./$(BIN) demo
	./$(BIN) demo --backend=s3

vet:
	$(GO) vet ./...

# Everything: unit tests, root tests on real loop devices and mounts, and the
# csi-sanity conformance suite.
test: deps vet
	$(GO) test $(TESTFLAGS) ./...
	./scripts/fuzz.sh

# Every fuzz target for FUZZTIME each (default 2s).
fuzz:
	./scripts/fuzz.sh

# The whole hostile-input table (make test runs one value of each kind).
hostile: deps
	VOLPLUG_HOSTILE=full $(GO) test -count=1 -timeout 30m -run TestHostileInput ./test/hostile/

# Only what runs without root.
unit:
	$(GO) test -count=1 -short ./...

bench: deps build
	./$(BIN) bench
	./$(BIN) bench s3 --versitygw bin/tools/versitygw
	$(GO) test -run '^$$' -bench . -benchtime 20x ./internal/bench/
	$(GO) test -run '^$$' -bench . -benchtime 3x ./internal/bucketfs/
	# The native layout against images and the btrfs pool itself: a volume's
	# life, and fio random 4 KiB writes (about 2 minutes).
	$(GO) test -run '^$$' -bench Lifecycle -benchtime 30x ./internal/backend/local/
	$(GO) test -run '^$$' -bench RandWrite -benchtime 1x ./internal/backend/local/

clean:
	rm -rf bin
