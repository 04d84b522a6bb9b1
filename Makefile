# volplug: `make demo` and `make test` do all set-up on a fresh Debian machine
# (as root); see README.md.
GO      ?= go
BIN     := bin/volplug
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The tag `make image` gives the image; deploy/ and the chart name it
# (go test ./deploy checks they agree).
IMAGE   ?= ghcr.io/volplug/volplug:dev
# The suites share loop devices and the mount table; each package runs its
# root tests on its own pool, so packages may run in parallel.
TESTFLAGS ?= -race -count=1 -timeout 15m

.PHONY: all build deps demo test unit bench reliability vet clean fuzz hostile image image-deps image-test

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/volplug

# System packages, then the test S3 server (versitygw) and helm, each built
# once into bin/tools/.
deps:
	@./scripts/install-deps.sh
	@./scripts/install-versitygw.sh
	@./scripts/install-helm.sh

demo: deps build
	./$(BIN) demo
	./$(BIN) demo --backend=s3

vet:
	$(GO) vet ./...

# Everything: unit tests, root tests on real loop devices and mounts, and the
# csi-sanity conformance suite.
test: deps vet
	$(GO) test $(TESTFLAGS) ./...
	$(GO) test $(TESTFLAGS) -tags failpoints ./internal/failpoint/
	./scripts/fuzz.sh

# Every crash case: volplug csi killed at each failpoint of a volume's
# whole life, restarted, retried, checked (make test runs a subset); and
# the node reboot. See README.md, Reliability.
reliability: deps
	$(GO) test -count=1 -timeout 90m -v ./test/crash/ -args -all
	# The mounter killed 20 times under a reader and a writer (make test: 3).
	VOLPLUG_CRASH_KILLS=20 $(GO) test -count=1 -timeout 20m -v -run TestCrashUnderLoad ./internal/mounter/

# Every fuzz target for FUZZTIME each (default 10000x: 10,000 inputs; see scripts/fuzz.sh).
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
	# 1,000 volumes on one node: per-call cost and memory at 10, 100, 1,000.
	./$(BIN) bench scale
	$(GO) test -run '^$$' -bench . -benchtime 20x ./internal/bench/
	$(GO) test -run '^$$' -bench . -benchtime 3x ./internal/bucketfs/
	# What journaling the kernel table costs a LOOKUP; crash failover: kill
	# to first answer (p50, p99 over 20 kills, against a statfs), memory of
	# the mounter and the keeper at 1 and 50 volumes.
	$(GO) test -run '^$$' -bench BenchmarkJournalLookup -benchtime 200000x ./internal/bucketfs/
	$(GO) test -run '^$$' -bench BenchmarkCrashFailover -benchtime 20x ./internal/mounter/
	# Local volumes per layout (image, native, native nodatacow) against the
	# pool's own filesystem (fio, four jobs) and against a bare directory
	# (a volume's life, c=1 and c=8), in one run (about 6 minutes); then the
	# lifecycle with the stage 2 s after the create, as a cluster does.
	./$(BIN) bench disk
	./$(BIN) bench disk --fio=false --stage-delay=2s --cycles=10

# The container image as an OCI archive, with no Docker engine and no
# registry: a Debian rootfs from packages (mmdebstrap) plus the static
# binary, reproducible (scripts/build-image.sh). Import it with
# `ctr -n k8s.io images import`, `kind load image-archive`, `podman load`
# or `docker load` (README.md, quick start).
image: image-deps
	IMAGE=$(IMAGE) VERSION=$(VERSION) ./scripts/build-image.sh bin/volplug-image.tar

image-deps:
	@./scripts/install-image-deps.sh

# The image proven: read as each importer reads it, built a second time to
# the same bytes, and volplug run from its root filesystem (every demo, a
# FlexVolume install and mount). About 7 minutes of CPU (two image
# builds); .ci/run runs it after `make test`.
image-test: deps image
	VOLPLUG_IMAGE=$(CURDIR)/bin/volplug-image.tar $(GO) test -v -count=1 -timeout 40m ./test/image/

clean:
	rm -rf bin
