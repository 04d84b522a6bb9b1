# syntax=docker/dockerfile:1
#
# volplug: one image for every subcommand (csi, flex, adapt, mounter). Without
# Docker, `make image` builds the same image as an archive (README.md).
#
#   docker build -t ghcr.io/volplug/volplug:dev --build-arg VERSION=$(git describe --always --dirty) .
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the build stage runs on the build machine and cross-compiles; CGO is off).

# ---- build ----
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download
# The rest of the source (.dockerignore keeps manifests, docs and tests out).
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH
# Static binary (no libc needed at run time), no build paths in it; the
# version reaches `volplug csi` as the CSI vendor version.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/volplug ./cmd/volplug

# ---- run ----
# Debian, not distroless: the driver runs the real mkfs, fsck, resize and
# mount tools, and must use the same versions everywhere. The same image as
# `make image` builds without Docker (scripts/build-image.sh: mmdebstrap's
# minbase, which is what debian:bookworm-slim is, with the same files left
# out): the packages of scripts/image-packages (test/image checks this list
# against it), their versions in /usr/share/volplug/packages, volplug at
# /usr/local/bin. What each package is for is in scripts/image-packages.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      util-linux mount e2fsprogs xfsprogs btrfs-progs fuse3 ca-certificates s3fs rclone jq \
 && mkdir -p /usr/share/volplug \
 && dpkg-query -W -f '${Package} ${Version}\n' | LC_ALL=C sort > /usr/share/volplug/packages \
 && find /usr -depth -type d -name __pycache__ -exec rm -rf {} + \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/volplug /usr/local/bin/volplug
# Runs as root: the node plugin attaches loop devices and mounts (the pod is
# privileged anyway).
ENTRYPOINT ["/usr/local/bin/volplug"]
