# syntax=docker/dockerfile:1
#
# volplug: one image for every subcommand (csi, and later flex/adapt).
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
# mount tools, and must use the same versions everywhere.
FROM debian:bookworm-slim
# e2fsprogs, xfsprogs, btrfs-progs: mkfs/fsck/resize of ext4, xfs, btrfs.
# util-linux: blkid (what is on a device), wipefs. mount: mount, umount,
# losetup. fuse3 and ca-certificates: the s3 backend (FUSE, TLS to S3).
# s3fs and rclone: the s3 backend's other mounters (StorageClass parameter
# mounter: s3fs or rclone), which `volplug mounter` runs in this image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      e2fsprogs xfsprogs btrfs-progs util-linux mount fuse3 ca-certificates \
      s3fs rclone \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/volplug /usr/local/bin/volplug
# Runs as root: the node plugin attaches loop devices and mounts (the pod is
# privileged anyway).
ENTRYPOINT ["/usr/local/bin/volplug"]
