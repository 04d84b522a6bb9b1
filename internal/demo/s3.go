package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/mounter"
	"github.com/volplug/volplug/internal/s3server"
)

// s3Options configure `volplug demo --backend=s3`.
type s3Options struct {
	keep bool
	size int64
	// endpoint is the S3 server to use; empty: the demo starts versitygw
	// (at versitygw) on 127.0.0.1 itself.
	endpoint, region, versitygw string
	mounterKind                 string
	// accessKey and secretKey come from the environment, never a flag, so
	// they are not in the demo's argv.
	accessKey, secretKey string
}

// s3Demo is one run of the bucket walk. It shares the local demo's
// narration, undo stack and final check (demo), and adds what object
// storage has: a server, secrets, a mounter, a second pod.
type s3Demo struct {
	*demo
	o       s3Options
	srv     *s3server.Server // nil with an external endpoint
	secrets map[string]string
	cl      *minio.Client // the demo's own look into the storage
	bucket  string

	mounterSock, mounterState, mounterLog string
	podB                                  string
	params                                map[string]string
}

// envAccessKey and envSecretKey name where an external endpoint's keys
// come from: the AWS CLI's own variables.
const (
	envAccessKey = "AWS_ACCESS_KEY_ID"
	envSecretKey = "AWS_SECRET_ACCESS_KEY"
)

// preflightS3 refuses to start when the walk cannot succeed, and fills in
// the keys (external endpoint) or the server's binary (our own server).
func preflightS3(o *s3Options) error {
	switch o.mounterKind {
	case mounter.Builtin, mounter.S3FS, mounter.Rclone:
	default:
		return fmt.Errorf("--mounter %q: want %s, %s or %s", o.mounterKind, mounter.Builtin, mounter.S3FS, mounter.Rclone)
	}
	if geteuid() != 0 {
		return errors.New("the demo mounts buckets through FUSE, which needs root: run it with sudo")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no /dev/fuse (modprobe fuse; apt-get install fuse3): %w", err)
	}
	if o.mounterKind != mounter.Builtin {
		if _, err := lookPath(o.mounterKind); err != nil {
			return fmt.Errorf("--mounter=%s needs %s: install with `apt-get install %s`", o.mounterKind, o.mounterKind, o.mounterKind)
		}
	}
	if o.endpoint != "" {
		u, err := url.Parse(o.endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--s3-endpoint %q: want http://host[:port] or https://host[:port]", o.endpoint)
		}
		o.accessKey, o.secretKey = os.Getenv(envAccessKey), os.Getenv(envSecretKey)
		if o.accessKey == "" || o.secretKey == "" {
			return fmt.Errorf("--s3-endpoint needs keys: set %s and %s in the environment (never on the command line)", envAccessKey, envSecretKey)
		}
		return nil
	}
	bin, err := findVersitygw(o.versitygw)
	if err != nil {
		return err
	}
	o.versitygw = bin
	return nil
}

// findVersitygw resolves --versitygw: as given, else bin/tools/versitygw
// of the repository (where `make deps` builds it: under the working
// directory, or beside this binary in bin/), else $PATH.
func findVersitygw(flag string) (string, error) {
	if flag != "" {
		if _, err := os.Stat(flag); err != nil {
			return "", fmt.Errorf("--versitygw: %w", err)
		}
		return flag, nil
	}
	candidates := []string{filepath.Join("bin", "tools", "versitygw")}
	if self, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), "tools", "versitygw"))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return filepath.Abs(c)
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", errors.New("no S3 server to start: versitygw is not in bin/tools/ nor on $PATH " +
		"(scripts/install-versitygw.sh builds it; or give --versitygw, or --s3-endpoint with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
}

func runS3(ctx context.Context, w io.Writer, o s3Options) error {
	if err := preflightS3(&o); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "volplug-demo-s3-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return fmt.Errorf("volume name: %w", err)
	}
	s := &s3Demo{
		demo: &demo{
			opts:    options{keep: o.keep, size: o.size},
			n:       &narrator{w: w},
			dir:     dir,
			sock:    filepath.Join(dir, "csi.sock"),
			staging: filepath.Join(dir, "staging"),
			target:  filepath.Join(dir, "pods", "pod-a", "volume"),
			logPath: filepath.Join(dir, "driver.log"),
			state:   stateNone,
			capability: &csi.VolumeCapability{
				// ReadWriteMany: a bucket serves many pods (and nodes) at once.
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
				AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			},
		},
		o:            o,
		mounterSock:  filepath.Join(dir, "run", "mounter.sock"),
		mounterState: filepath.Join(dir, "mounter"),
		mounterLog:   filepath.Join(dir, "mounter.log"),
		podB:         filepath.Join(dir, "pods", "pod-b", "volume"),
		params:       map[string]string{"mounter": o.mounterKind},
	}
	// A CO names volumes pvc-<uid>; the random part keeps the bucket's
	// name (which is global on AWS) from meeting another run's.
	s.bucket = "pvc-demo-" + hex.EncodeToString(suffix)
	start := time.Now()
	s.n.printf("volplug demo --backend=s3: one bucket volume's whole life through CSI, on this machine\n")
	s.n.printf("%swork dir %s (logs there: driver.log, mounter.log)\n", indent, dir)

	fwdErr := s.forward(ctx)
	if fwdErr != nil {
		s.n.printf("\n!! the walk failed: %v\n!! tearing down what was set up, in reverse\n", fwdErr)
	} else {
		s.n.printf("\n-- and back, the way Kubernetes tears a volume down --\n")
	}
	backErr := s.unwind(context.WithoutCancel(ctx), fwdErr != nil)
	failed := fwdErr != nil || backErr != nil
	procErr := s.checkProcesses()
	if failed {
		s.unmountLeftovers()
	}
	cleanErr := s.cleanup(failed || procErr != nil)
	if failed {
		for _, l := range []string{s.logPath, s.mounterLog} {
			lines := tailFile(l, 15)
			if len(lines) == 0 {
				continue // no mounter was started, say
			}
			s.n.printf("\n%s, its last lines:\n", l)
			for _, line := range lines {
				s.n.printf("%s%s\n", indent, line)
			}
		}
	}
	if err := errors.Join(fwdErr, backErr, procErr, cleanErr); err != nil {
		return err
	}
	s.n.printf("\nThe bucket was made, mounted, shared by two pods, grown, survived its driver's crash, and is gone, in %s in all.\n",
		roundDur(time.Since(start)))
	return nil
}

func (s *s3Demo) forward(ctx context.Context) error {
	steps := []func(context.Context) error{
		s.startServer, s.startS3Driver, s.identity, s.capabilities, s.createBucket,
		s.stageBucket, s.publishPodA, s.writeObject, s.publishPodB, s.showMounts, s.expandQuota, s.crashDriver,
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// s3Client is the demo's own S3 client, to show what the driver did in
// the storage; the driver never sees it.
func s3Client(endpoint, region, access, secret string) (*minio.Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	tr, err := minio.DefaultTransport(u.Scheme == "https")
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	tr.Proxy = nil // 127.0.0.1 must not go through an HTTP proxy from the environment
	cl, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(access, secret, ""),
		Secure: u.Scheme == "https", Region: region, Transport: tr})
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	return cl, nil
}

// unmountLeftovers is the last resort after a failed way back (a driver
// that could not be restarted, say): whatever is still mounted under the
// private work dir is the demo's, so it comes off, deepest first.
func (s *s3Demo) unmountLeftovers() {
	mounts, err := mountsUnder(s.dir)
	if err != nil || len(mounts) == 0 {
		return
	}
	s.n.begin("cleanup:", "Unmount what the way back left", "The driver could not take these down; the demo does, so the host is clean.")
	t0 := time.Now()
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		p := mounts[i].MountPoint
		if err := unix.Unmount(p, 0); err != nil {
			// A FUSE mount whose server died can refuse a plain unmount.
			if err2 := unix.Unmount(p, unix.MNT_DETACH); err2 != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err2))
				continue
			}
		}
		s.n.detail("unmounted %s", p)
	}
	s.n.end(time.Since(t0), errors.Join(errs...))
}
