package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

var epoch = time.Unix(1764547200, 0).UTC()

// rootfsTar is a small tarball shaped like mmdebstrap's: "./" names, the
// root entry, device nodes, owner names, times after the epoch.
func rootfsTar(t *testing.T, mtime time.Time) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	add := func(h *tar.Header, data string) {
		h.ModTime, h.AccessTime, h.ChangeTime = mtime, mtime, mtime
		h.Uname, h.Gname = "root", "root"
		h.Size = int64(len(data))
		h.Format = tar.FormatGNU
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "./dev/", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeChar, Name: "./dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, "")
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "./usr/", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "./usr/bin/", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "./usr/bin/mount", Mode: 0o4755}, "#!mount")
	add(&tar.Header{Typeflag: tar.TypeLink, Name: "./usr/bin/umount", Linkname: "./usr/bin/mount", Mode: 0o4755}, "")
	add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "./bin", Linkname: "usr/bin", Mode: 0o777}, "")
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "./usr/share/", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "./usr/share/volplug/", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "./usr/share/volplug/packages", Mode: 0o644}, "mount 2.38.1-5\nxfsprogs 6.1.0-1\n")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestNormalize(t *testing.T) {
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	got, err := Normalize(bytes.NewReader(rootfsTar(t, epoch.Add(time.Hour))), tw, epoch, "usr/share/volplug/packages")
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if string(got["usr/share/volplug/packages"]) != "mount 2.38.1-5\nxfsprogs 6.1.0-1\n" {
		t.Errorf("captured %q", got)
	}
	tr := tar.NewReader(&out)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(epoch) || h.Uname != "" || h.Gname != "" || !h.AccessTime.IsZero() {
			t.Errorf("%s: time %v uname %q gname %q atime %v", h.Name, h.ModTime, h.Uname, h.Gname, h.AccessTime)
		}
		if h.Name == "usr/bin/mount" && h.Mode != 0o4755 {
			t.Errorf("setuid lost: %o", h.Mode)
		}
		if h.Name == "usr/bin/umount" && h.Linkname != "usr/bin/mount" {
			t.Errorf("hard link to %q", h.Linkname)
		}
		if h.Name == "bin" && h.Linkname != "usr/bin" {
			t.Errorf("symlink to %q", h.Linkname)
		}
	}
	want := "dev/ usr/ usr/bin/ usr/bin/mount usr/bin/umount bin usr/share/ usr/share/volplug/ usr/share/volplug/packages"
	if s := join(names); s != want {
		t.Errorf("entries:\n got %s\nwant %s", s, want)
	}
}

func join(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x)
	}
	return b.String()
}

const ref = "ghcr.io/volplug/volplug:dev"

// build makes an archive from the synthetic rootfs and returns its bytes
// and the image.
func build(t *testing.T, dir string, mtime time.Time) ([]byte, v1.Image) {
	t.Helper()
	root, err := GzipLayer(filepath.Join(dir, "root.tar.gz"), func(tw *tar.Writer) error {
		_, err := Normalize(bytes.NewReader(rootfsTar(t, mtime)), tw, epoch)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	bin, err := GzipLayer(filepath.Join(dir, "bin.tar.gz"), func(tw *tar.Writer) error {
		return WriteFiles(tw, []File{{Name: "usr/local/bin/volplug", Mode: 0o755, Data: []byte("\x7fELF")}}, epoch)
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := Image([]Layer{{Layer: root, CreatedBy: "rootfs"}, {Layer: bin, CreatedBy: "volplug"}}, Config{
		Created:     epoch,
		OS:          "linux",
		Arch:        "amd64",
		Entrypoint:  []string{"/usr/local/bin/volplug"},
		Env:         []string{"PATH=/usr/bin"},
		Labels:      map[string]string{"io.volplug.image.packages": "mount=2.38.1-5"},
		Annotations: map[string]string{"org.opencontainers.image.version": "v1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteArchive(&b, img, ref, epoch); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), img
}

// Two builds of the same files give the same bytes, even when the files'
// times differ past the epoch (a rebuild's newly written files).
func TestArchiveIsReproducible(t *testing.T) {
	a, imgA := build(t, t.TempDir(), epoch.Add(time.Hour))
	b, imgB := build(t, t.TempDir(), epoch.Add(48*time.Hour))
	da, _ := imgA.Digest()
	db, _ := imgB.Digest()
	if da != db {
		t.Errorf("digests differ: %s, %s", da, db)
	}
	if !bytes.Equal(a, b) {
		t.Error("archives differ")
	}
}

// The archive read back both ways, through the OCI layout (containerd,
// podman) and through manifest.json (docker load), is the image written,
// and passes go-containerregistry's validation (every digest, size and
// diff ID checked against the bytes).
func TestArchiveReadsBothWays(t *testing.T) {
	dir := t.TempDir()
	data, img := build(t, dir, epoch)
	archive := filepath.Join(dir, "image.tar")
	if err := os.WriteFile(archive, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()

	oci, ann, err := ReadArchive(archive, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := oci.Digest(); d != want {
		t.Errorf("OCI layout: digest %s, want %s", d, want)
	}
	if ann["io.containerd.image.name"] != ref || ann["org.opencontainers.image.ref.name"] != ref {
		t.Errorf("index annotations %v", ann)
	}
	if err := validate.Image(oci); err != nil {
		t.Errorf("OCI layout: %v", err)
	}
	m, _ := oci.Manifest()
	if m.Annotations["org.opencontainers.image.version"] != "v1" || m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("manifest: %s %v", m.MediaType, m.Annotations)
	}

	tag, _ := name.NewTag(ref)
	docker, err := tarball.ImageFromPath(archive, &tag)
	if err != nil {
		t.Fatalf("docker view (manifest.json): %v", err)
	}
	if err := validate.Image(docker); err != nil {
		t.Errorf("docker view: %v", err)
	}
	cw, _ := img.ConfigName()
	if c, _ := docker.ConfigName(); c != cw {
		t.Errorf("docker view: config %s, want %s", c, cw)
	}
	cf, _ := docker.ConfigFile()
	if cf.Config.Entrypoint[0] != "/usr/local/bin/volplug" || cf.Config.Labels["io.volplug.image.packages"] != "mount=2.38.1-5" ||
		!cf.Created.Time.Equal(epoch) || len(cf.History) != 2 {
		js, _ := json.Marshal(cf)
		t.Errorf("config: %s", js)
	}

	// The flattened filesystem: both layers, no device node.
	tr := tar.NewReader(mutate.Extract(oci))
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = true
	}
	for _, n := range []string{"usr/bin/mount", "usr/local/bin/volplug", "usr/share/volplug/packages"} {
		if !seen[n] {
			t.Errorf("flattened image lacks %s", n)
		}
	}
	if seen["dev/null"] {
		t.Error("flattened image has dev/null")
	}
}

func TestWriteArchiveRefusesBadReference(t *testing.T) {
	_, img := build(t, t.TempDir(), epoch)
	if err := WriteArchive(io.Discard, img, "Not A Ref", epoch); err == nil {
		t.Error("no error for a bad reference")
	}
}
