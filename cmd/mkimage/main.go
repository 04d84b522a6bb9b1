// Command mkimage assembles volplug's container image from a Debian root
// filesystem tarball (mmdebstrap's) and the static volplug binary, and writes
// it as an image archive every runtime loads. scripts/build-image.sh (`make
// image`) runs it; it is a build tool, not part of the product.
//
// Every timestamp is SOURCE_DATE_EPOCH, so the same inputs give the same
// image digest.
package main

import (
	"archive/tar"
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/volplug/volplug/internal/ociimage"
)

// packagesFile is where build-image.sh's mmdebstrap hook lists the rootfs's
// packages ("name version" lines); the Dockerfile writes the same file.
const packagesFile = "usr/share/volplug/packages"

// Path in the image that the binary and the entrypoint use.
const binaryPath = "usr/local/bin/volplug"

func main() {
	var (
		rootfs   = flag.String("rootfs", "", "root filesystem tarball (mmdebstrap output)")
		binary   = flag.String("binary", "", "the static volplug binary")
		ref      = flag.String("ref", "ghcr.io/volplug/volplug:dev", "image reference (registry/repository:tag) the archive names")
		version  = flag.String("version", "dev", "volplug's version (label org.opencontainers.image.version)")
		revision = flag.String("revision", "", "source revision (label org.opencontainers.image.revision)")
		base     = flag.String("base", "", "what the rootfs is (label org.opencontainers.image.base.name)")
		arch     = flag.String("arch", runtime.GOARCH, "the image's architecture (the binary's and the packages')")
		out      = flag.String("out", "", "archive to write")
	)
	flag.Parse()
	if *rootfs == "" || *binary == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "mkimage: --rootfs, --binary and --out are required")
		os.Exit(2)
	}
	epoch, err := sourceDateEpoch()
	if err == nil {
		err = build(*rootfs, *binary, *ref, *version, *revision, *base, *arch, *out, epoch)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH is not set: the image's times would not be reproducible")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

func build(rootfs, binary, ref, version, revision, base, arch, out string, epoch time.Time) error {
	work, err := os.MkdirTemp(filepath.Dir(out), ".mkimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var captured map[string][]byte
	rootLayer, err := ociimage.GzipLayer(filepath.Join(work, "rootfs.tar.gz"), func(tw *tar.Writer) error {
		f, err := os.Open(rootfs)
		if err != nil {
			return err
		}
		defer f.Close()
		captured, err = ociimage.Normalize(bufio.NewReaderSize(f, 1<<20), tw, epoch, packagesFile)
		return err
	})
	if err != nil {
		return err
	}
	pkgs, ok := captured[packagesFile]
	if !ok {
		return fmt.Errorf("%s has no /%s: not made by scripts/build-image.sh?", rootfs, packagesFile)
	}
	exe, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	binLayer, err := ociimage.GzipLayer(filepath.Join(work, "volplug.tar.gz"), func(tw *tar.Writer) error {
		return ociimage.WriteFiles(tw, []ociimage.File{{Name: binaryPath, Mode: 0o755, Data: exe}}, epoch)
	})
	if err != nil {
		return err
	}

	created := epoch.Format(time.RFC3339)
	oci := map[string]string{
		"org.opencontainers.image.title":       "volplug",
		"org.opencontainers.image.description": "CSI and FlexVolume driver: disk images on loop devices, S3 buckets through FUSE",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.revision":    revision,
		"org.opencontainers.image.created":     created,
		"org.opencontainers.image.base.name":   base,
	}
	labels := map[string]string{
		// Every Debian package of the image and its version, as in
		// /usr/share/volplug/packages: "name=version" separated by spaces.
		"io.volplug.image.packages": packagesLabel(string(pkgs)),
	}
	for k, v := range oci {
		labels[k] = v
	}
	img, err := ociimage.Image([]ociimage.Layer{
		{Layer: rootLayer, CreatedBy: "mmdebstrap: " + base + " with scripts/image-packages"},
		{Layer: binLayer, CreatedBy: "volplug " + version + " (static) at /" + binaryPath},
	}, ociimage.Config{
		Created:     epoch,
		OS:          "linux",
		Arch:        arch,
		Entrypoint:  []string{"/" + binaryPath},
		Env:         []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels:      labels,
		Annotations: oci,
	})
	if err != nil {
		return err
	}

	tmp := filepath.Join(work, "image.tar")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = ociimage.WriteArchive(bw, img, ref, epoch)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n", ref, digest)
	return nil
}

// packagesLabel turns "name version" lines into "name=version ...".
func packagesLabel(list string) string {
	var out []string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			out = append(out, f[0]+"="+f[1])
		}
	}
	return strings.Join(out, " ")
}
