// Package image proves the container image `make image` builds: that every
// runtime's importer can read the archive, that two builds are the same
// image, and that volplug runs from the image's own root filesystem, with
// nothing of the host's: the local demo on ext4, xfs and btrfs, the s3 demo
// through each mounter, the adapter demo, and a FlexVolume install and
// mount. It reports the image's size and what takes the room.
//
// It runs under `make image-test` (VOLPLUG_IMAGE names the archive); plain
// `go test ./...` skips it.
package image

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/internal/ociimage"
	"github.com/volplug/volplug/internal/testutil"
)

const (
	imageEnv = "VOLPLUG_IMAGE" // the archive under test
	wantRef  = "ghcr.io/volplug/volplug:dev"
)

func archivePath(t *testing.T) string {
	t.Helper()
	p := os.Getenv(imageEnv)
	if p == "" {
		t.Skipf("%s is not set: run `make image-test`", imageEnv)
	}
	p, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestArchive reads the archive as each importer does and checks what the
// image says about itself.
func TestArchive(t *testing.T) {
	archive := archivePath(t)
	img, ann, err := ociimage.ReadArchive(archive, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Every blob against its digest, size and diff ID.
	if err := validate.Image(img); err != nil {
		t.Fatalf("OCI layout: %v", err)
	}
	if ann["io.containerd.image.name"] != wantRef || ann["org.opencontainers.image.ref.name"] != wantRef {
		t.Errorf("index.json names the image %v, want %s (containerd and podman name it from these)", ann, wantRef)
	}
	tag, err := name.NewTag(wantRef)
	if err != nil {
		t.Fatal(err)
	}
	docker, err := tarball.ImageFromPath(archive, &tag)
	if err != nil {
		t.Fatalf("manifest.json (docker load's view): %v", err)
	}
	if a, b := configName(t, img), configName(t, docker); a != b {
		t.Errorf("manifest.json names config %s, index.json %s", b, a)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cf.Config.Entrypoint) != "[/usr/local/bin/volplug]" || cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("config: entrypoint %v, platform %s/%s", cf.Config.Entrypoint, cf.OS, cf.Architecture)
	}
	for _, k := range []string{"org.opencontainers.image.version", "org.opencontainers.image.revision",
		"org.opencontainers.image.created", "io.volplug.image.packages"} {
		if cf.Config.Labels[k] == "" {
			t.Errorf("label %s missing", k)
		}
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Annotations["org.opencontainers.image.created"] != cf.Config.Labels["org.opencontainers.image.created"] {
		t.Errorf("manifest annotations %v", m.Annotations)
	}

	// skopeo (containers/image, podman's library) reads both forms.
	skopeo := tool(t, "skopeo")
	for _, transport := range []string{"oci-archive:", "docker-archive:"} {
		out, err := exec.Command(skopeo, "inspect", "--config", transport+archive).Output()
		if err != nil {
			t.Errorf("skopeo inspect --config %s: %v: %s", transport, err, stderr(err))
			continue
		}
		var got v1.ConfigFile
		if err := json.Unmarshal(out, &got); err != nil {
			t.Errorf("skopeo inspect --config %s: %v", transport, err)
			continue
		}
		if got.Config.Labels["io.volplug.image.packages"] != cf.Config.Labels["io.volplug.image.packages"] ||
			len(got.RootFS.DiffIDs) != len(cf.RootFS.DiffIDs) {
			t.Errorf("skopeo %s sees another config: %v", transport, got.Config.Labels)
		}
	}
	// docker load tags the image from manifest.json's RepoTags.
	out, err := exec.Command(skopeo, "list-tags", "docker-archive:"+archive).Output()
	if err != nil || !strings.Contains(string(out), `"`+wantRef+`"`) {
		t.Errorf("skopeo list-tags docker-archive: want %s: %v %s %s", wantRef, err, out, stderr(err))
	}
}

func configName(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// tool finds a program the test needs; scripts/install-image-deps.sh
// installs them all.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run scripts/install-image-deps.sh (make image-test does)", name)
	}
	return p
}

// TestReproducible builds the image again from the same commit and wants
// the same bytes.
func TestReproducible(t *testing.T) {
	archive := archivePath(t)
	testutil.RequireRoot(t)
	again := filepath.Join(t.TempDir(), "again.tar")
	// A .deb no package of the image is (an old version, as a Debian update
	// leaves behind) is pruned from the cache, and does not reach the
	// image: the digests below stay equal.
	cache := cmp.Or(os.Getenv("VOLPLUG_DEB_CACHE"), "/var/cache/volplug/debs")
	stale := filepath.Join(cache, "volplug-stale-test_0.0_all.deb")
	if err := os.WriteFile(stale, []byte("not a package"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command("./scripts/build-image.sh", again)
	cmd.Dir = testutil.ModuleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("second build: %v\n%s", err, out)
	}
	t.Logf("second build (warm package cache): %s", time.Since(start).Round(time.Second))
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the build left %s in its package cache (%v)", stale, err)
		os.Remove(stale)
	}
	if debs, _ := filepath.Glob(filepath.Join(cache, "*.deb")); len(debs) < 50 {
		t.Errorf("the package cache keeps %d .debs after the build: it pruned what the build used", len(debs))
	}
	a, b := fileSum(t, archive), fileSum(t, again)
	if a != b {
		t.Errorf("two builds differ: %s has sha256 %s, the rebuild %s", archive, a, b)
	}
	manifest := func(p string) (v1.Hash, *v1.Manifest) {
		img, _, err := ociimage.ReadArchive(p, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		return d, m
	}
	da, ma := manifest(archive)
	db, mb := manifest(again)
	if da == db {
		t.Logf("both builds: %s@%s", wantRef, da)
		return
	}
	// Say which part differs: the Debian rootfs, the binary, the config.
	t.Errorf("image digests differ: %s, %s", da, db)
	if ma.Config.Digest != mb.Config.Digest {
		t.Errorf("configs differ: %s, %s", ma.Config.Digest, mb.Config.Digest)
	}
	for i := range min(len(ma.Layers), len(mb.Layers)) {
		if ma.Layers[i].Digest != mb.Layers[i].Digest {
			t.Errorf("layer %d (%s) differs: %s, %s", i, []string{"rootfs", "volplug"}[min(i, 1)], ma.Layers[i].Digest, mb.Layers[i].Digest)
		}
	}
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestRunsFromTheImage unpacks the image with umoci (an OCI tool of its
// own, so the layers are applied as a runtime applies them) and runs
// volplug from that root filesystem, in a mount namespace of its own with
// /dev, /proc and /sys, as a privileged pod has them. Every program volplug
// runs comes from the image: a missing one fails its step.
func TestRunsFromTheImage(t *testing.T) {
	archive := archivePath(t)
	testutil.RequireRoot(t)
	r := unpack(t, archive)
	report(t, archive, r.dir)

	t.Run("tools", func(t *testing.T) {
		// What volplug and mount-utils run, by name; the demos below run most
		// of them, this names the rest (fsck after an unclean stop, wipefs
		// after a cut-short mkfs).
		out, err := r.run(t, time.Minute, nil, lookPathArg, "blkid", "wipefs", "blockdev", "losetup",
			"mount", "umount", "mkfs.ext4", "fsck.ext4", "e2fsck", "resize2fs", "dumpe2fs", "mkfs.xfs",
			"xfs_growfs", "xfs_io", "mkfs.btrfs", "btrfs", "fusermount3", "s3fs", "rclone", "bash")
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if _, err := os.Stat(filepath.Join(r.dir, "etc/ssl/certs/ca-certificates.crt")); err != nil {
			t.Error("no CA bundle: TLS to S3 would fail")
		}
	})
	for _, fs := range []string{"ext4", "xfs", "btrfs"} {
		t.Run("demo-local-"+fs, func(t *testing.T) {
			r.demo(t, nil, "demo", "--fs-type", fs)
		})
	}
	t.Run("demo-adapt", func(t *testing.T) {
		r.demo(t, nil, "demo", "adapt")
	})
	t.Run("flex", func(t *testing.T) {
		r.flex(t)
	})
	srv := testutil.StartS3Server(t)
	keys := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}
	for _, m := range []string{"builtin", "s3fs", "rclone"} {
		t.Run("demo-s3-"+m, func(t *testing.T) {
			r.demo(t, keys, "demo", "--backend=s3", "--s3-endpoint", srv.Endpoint, "--mounter", m, "--size", "64Mi")
		})
	}
}

// rootfs is the image unpacked: its files and its config.
type rootfs struct {
	dir        string
	entrypoint []string
	env        []string
}

func unpack(t *testing.T, archive string) *rootfs {
	t.Helper()
	skopeo, umoci := tool(t, "skopeo"), tool(t, "umoci")
	work, err := os.MkdirTemp("", "volplug-image-test-")
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(work, "bundle")
	t.Cleanup(func() {
		// Nothing was mounted in this namespace; make sure before removing.
		if left, _ := mount.MountsUnder(work); len(left) > 0 {
			t.Errorf("mounts under %s: %v; leaving it", work, left)
			return
		}
		os.RemoveAll(work)
	})
	start := time.Now()
	if out, err := exec.Command(skopeo, "copy", "--quiet", "oci-archive:"+archive, "oci:"+filepath.Join(work, "oci")+":volplug").CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v: %s", err, out)
	}
	if out, err := exec.Command(umoci, "unpack", "--image", filepath.Join(work, "oci")+":volplug", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v: %s", err, out)
	}
	t.Logf("unpacked with skopeo and umoci in %s", time.Since(start).Round(time.Second))
	// umoci writes the runtime spec it derived from the image's config.
	var spec struct {
		Process struct {
			Args []string `json:"args"`
			Env  []string `json:"env"`
		} `json:"process"`
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err == nil {
		err = json.Unmarshal(data, &spec)
	}
	if err != nil {
		t.Fatalf("bundle config.json: %v", err)
	}
	if len(spec.Process.Args) == 0 {
		t.Fatal("the image has no entrypoint")
	}
	r := &rootfs{dir: filepath.Join(bundle, "rootfs"), entrypoint: spec.Process.Args, env: spec.Process.Env}
	t.Cleanup(func() { testutil.CheckClean(t, r.dir) })
	return r
}

// run runs the image's entrypoint with args inside the rootfs (through the
// helper in main_test.go), with the image's environment plus env.
func (r *rootfs) run(t *testing.T, timeout time.Duration, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, r.entrypoint...), args...)
	if len(args) > 0 && (args[0] == lookPathArg || args[0] == runArg) {
		argv = args
	}
	cmd := exec.CommandContext(ctx, self, argv...)
	envJSON, _ := json.Marshal(append(append([]string{}, r.env...), env...))
	cmd.Env = []string{chrootEnv + "=" + r.dir, chrootEnvEnv + "=" + string(envJSON)}
	// A mount namespace of its own (Go makes it private): the binds of
	// /dev, /proc and /sys and every mount volplug makes end with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	// On timeout the demo gets SIGINT, which tears down what it made.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = time.Minute
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

func (r *rootfs) demo(t *testing.T, env []string, args ...string) {
	t.Helper()
	start := time.Now()
	out, err := r.run(t, 5*time.Minute, env, args...)
	if err != nil {
		t.Fatalf("volplug %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("volplug %s: ok in %s; its last line: %s", strings.Join(args, " "),
		time.Since(start).Round(100*time.Millisecond), lastLine(out))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// flex installs the FlexVolume drivers as the DaemonSet does, then plays
// kubelet: init, a mount that makes, formats and mounts a disk image, and
// the unmount.
func (r *rootfs) flex(t *testing.T) {
	out, err := r.run(t, time.Minute, nil, "flex", "install", "--plugin-dir", "/tmp/flex/exec",
		"--pool", "/tmp/flex/pool", "--log-file", "/tmp/flex/flex.log")
	if err != nil {
		t.Fatalf("flex install: %v: %s", err, out)
	}
	driver := "/tmp/flex/exec/volplug~local/local"
	call := func(args ...string) map[string]any {
		t.Helper()
		out, err := r.run(t, time.Minute, nil, append([]string{runArg, driver}, args...)...)
		var res map[string]any
		if jerr := json.Unmarshal([]byte(out), &res); jerr != nil || res["status"] != "Success" {
			t.Fatalf("flex %s: %v %v: %s", args[0], err, jerr, out)
		}
		return res
	}
	call("init")
	if _, err := os.Stat(filepath.Join(r.dir, "tmp/flex/exec/volplug~s3/s3")); err != nil {
		t.Errorf("the s3 flex driver was not installed: %v", err)
	}
	target := "/tmp/flex/pods/data"
	if err := os.MkdirAll(filepath.Join(r.dir, target), 0o750); err != nil {
		t.Fatal(err)
	}
	opts := `{"kubernetes.io/fsType":"ext4","size":"64Mi","kubernetes.io/pod.namespace":"image-test",` +
		`"kubernetes.io/pvOrVolumeName":"data","kubernetes.io/readwrite":"rw"}`
	// mount and unmount in one namespace: the helper runs them one after
	// the other, as kubelet would, then the namespace ends.
	out, err = r.run(t, 2*time.Minute, nil, runArg, driver, "mount", target, opts, andThen, driver, "unmount", target)
	if err != nil {
		t.Fatalf("flex mount and unmount: %v: %s", err, out)
	}
	answers := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		answers++
		var res map[string]any
		if err := json.Unmarshal([]byte(line), &res); err != nil || res["status"] != "Success" {
			t.Fatalf("flex mount/unmount answered %q (%v)", line, err)
		}
	}
	if answers != 2 {
		t.Fatalf("flex mount and unmount: %d answers: %s", answers, out)
	}
	t.Logf("flex: installed, init, mount (64Mi ext4) and unmount: ok")
}

// report logs the archive's and the root filesystem's sizes and the
// biggest packages (dpkg's Installed-Size).
func report(t *testing.T, archive, root string) {
	t.Helper()
	st, err := os.Stat(archive)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	_ = filepath.Walk(root, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
		return nil
	})
	bin, err := os.Stat(filepath.Join(root, "usr/local/bin/volplug"))
	if err != nil {
		t.Fatal(err)
	}
	pkgs := installedSizes(t, root)
	var sum int64
	for _, p := range pkgs {
		sum += p.kib
	}
	var b strings.Builder
	fmt.Fprintf(&b, "image: archive %.1f MiB (gzip layers); unpacked %.1f MiB: volplug %.1f MiB, %d Debian packages %.1f MiB (dpkg Installed-Size). Biggest:\n",
		mib(st.Size()), mib(total), mib(bin.Size()), len(pkgs), float64(sum)/1024)
	for i, p := range pkgs {
		if i == 15 {
			break
		}
		fmt.Fprintf(&b, "  %-22s %7.1f MiB  %4.1f%%\n", p.name, float64(p.kib)/1024, 100*float64(p.kib*1024)/float64(total))
	}
	t.Log(b.String())
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

type pkgSize struct {
	name string
	kib  int64
}

func installedSizes(t *testing.T, root string) []pkgSize {
	f, err := os.Open(filepath.Join(root, "var/lib/dpkg/status"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []pkgSize
	var cur pkgSize
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Package: "):
			cur = pkgSize{name: strings.TrimPrefix(line, "Package: ")}
		case strings.HasPrefix(line, "Installed-Size: "):
			cur.kib, _ = strconv.ParseInt(strings.TrimPrefix(line, "Installed-Size: "), 10, 64)
		case line == "" && cur.name != "":
			out = append(out, cur)
			cur = pkgSize{}
		}
	}
	if cur.name != "" {
		out = append(out, cur)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].kib > out[j].kib })
	return out
}
