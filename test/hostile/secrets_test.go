package hostile

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/testutil"
	"github.com/volplug/volplug/pkg/flex"
)

// secrets hands out distinct secret values and remembers them all.
type secrets struct {
	values map[string]string // value -> where it was passed
}

func (s *secrets) new(where string) map[string]string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	v := "sEcReT-" + hex.EncodeToString(b)
	s.values[v] = where
	return map[string]string{"password": v}
}

// with adds a distinct secret to the s3 keys, which must stay real.
func (s *secrets) with(keys map[string]string, where string) map[string]string {
	out := s.new(where)
	for k, v := range keys {
		out[k] = v
	}
	return out
}

// reporter is the part of testing.T the checkers use, so a test can run
// them against leaks planted on purpose and see what they report.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// scanProcs fails on any process whose argv or environment holds a
// secret, except rclone's environment (its documented key channel).
func (s *secrets) scanProcs(t reporter, when string) {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' || e.Name() == "self" {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		rclone := bytes.HasPrefix(cmdline, []byte("rclone\x00")) || bytes.Contains(cmdline, []byte("/rclone\x00"))
		// The test's own S3 server holds its root keys in its environment.
		if bytes.Contains(cmdline, []byte("versitygw")) {
			continue
		}
		for v, where := range s.values {
			if bytes.Contains(cmdline, []byte(v)) {
				t.Errorf("%s: the secret of %s is in the argv of pid %s: %q", when, where, e.Name(), short80(cmdline))
			}
			if bytes.Contains(environ, []byte(v)) && !rclone {
				t.Errorf("%s: the secret of %s is in the environment of pid %s (%q)", when, where, e.Name(), short80(cmdline))
			}
		}
	}
}

func short80(b []byte) string {
	s := strings.ReplaceAll(string(b), "\x00", " ")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// scanFiles fails on a file under roots that holds a secret (plain or
// base64) and is a log, or that others could read: a mode beyond 0600, or
// a directory on its path (below the root) open to others. newer limits
// the shared directories (/tmp, /run) to what changed during the test.
func (s *secrets) scanFiles(t reporter, when string, newer time.Time, roots ...string) {
	t.Helper()
	for _, root := range roots {
		// Shared directories (/tmp, /run) hold other tests' trees: what
		// volplug would leave there is near the top.
		maxDepth := 3
		if strings.HasPrefix(root, "/tmp/") {
			maxDepth = 64
		}
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if d != nil && d.IsDir() && strings.Count(strings.TrimPrefix(path, root), "/") >= maxDepth {
				return filepath.SkipDir
			}
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil || info.Size() > 64<<20 || info.ModTime().Before(newer) {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			for v, where := range s.values {
				if !bytes.Contains(data, []byte(v)) && !bytes.Contains(data, []byte(base64.StdEncoding.EncodeToString([]byte(v)))) {
					continue
				}
				switch {
				case strings.HasSuffix(path, ".log"):
					t.Errorf("%s: the secret of %s is in the log %s", when, where, path)
				case info.Mode().Perm()&0o077 != 0:
					t.Errorf("%s: the secret of %s is in %s, mode %v", when, where, path, info.Mode())
				default:
					for dir := filepath.Dir(path); strings.HasPrefix(dir, root) && dir != root; dir = filepath.Dir(dir) {
						if di, err := os.Stat(dir); err == nil && di.Mode().Perm()&0o077 != 0 && strings.Contains(dir, "mounter") {
							t.Errorf("%s: the secret of %s is in %s, in %s (mode %v)", when, where, path, dir, di.Mode())
						}
					}
				}
			}
			return nil
		})
	}
}

// TestSecretsGoNowhere passes a distinct secret through every RPC and flex
// call that carries one, with every driver at -v=5 (each request logged,
// secrets stripped), and looks for each value in every log, every
// process's argv and environment, and every file others can read. The
// documented channels are allowed: the s3 keys reach s3fs through a 0600
// password file in a 0700 directory (removed at unmount), rclone through
// its environment, a wrapped flex driver through its argv (as kubelet
// passes them).
func TestSecretsGoNowhere(t *testing.T) {
	dir := rootTest(t)
	start := time.Now().Add(-time.Second)
	bin := testutil.BuildVolplug(t, t.TempDir())
	s3 := testutil.StartS3Server(t)
	sec := &secrets{values: map[string]string{}}
	ctx := context.Background()

	// The local driver: every RPC that carries secrets.
	local := localDoor(t, bin, dir, filepath.Join(dir, "outside"))
	c, n := local.p.ctrl(), local.p.nodeC()
	capa := cap1(rw)
	vol, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "sec", VolumeCapabilities: []*csi.VolumeCapability{capa},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 32 << 20}, Secrets: sec.new("local CreateVolume")})
	must(t, err)
	id := vol.GetVolume().GetVolumeId()
	_, err = c.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: node, VolumeCapability: capa, Secrets: sec.new("local ControllerPublishVolume")})
	must(t, err)
	stage, target := filepath.Join(local.dir, "sec-stage"), filepath.Join(local.dir, "sec-target")
	_, err = n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: stage, VolumeCapability: capa, Secrets: sec.new("local NodeStageVolume")})
	must(t, err)
	_, err = n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: stage, TargetPath: target, VolumeCapability: capa, Secrets: sec.new("local NodePublishVolume")})
	must(t, err)
	_, err = c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 48 << 20}, Secrets: sec.new("local ControllerExpandVolume")})
	must(t, err)
	// Growing a mounted ext4 needs CAP_SYS_RESOURCE, which a sandbox may
	// lack (FAILED_PRECONDITION): the secret was passed either way.
	_, err = n.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target, CapacityRange: &csi.CapacityRange{RequiredBytes: 48 << 20}, Secrets: sec.new("local NodeExpandVolume")})
	if status.Code(err) != codes.FailedPrecondition {
		must(t, err)
	}
	snap, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "sec-snap", SourceVolumeId: id, Secrets: sec.new("local CreateSnapshot")})
	must(t, err)
	_, err = c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: id, Secrets: sec.new("local ListSnapshots")})
	must(t, err)
	_, err = c.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshot().GetSnapshotId(), Secrets: sec.new("local DeleteSnapshot")})
	must(t, err)
	_, err = n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	must(t, err)
	_, err = n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: stage})
	must(t, err)
	_, err = c.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: node, Secrets: sec.new("local ControllerUnpublishVolume")})
	must(t, err)
	_, err = c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: sec.new("local DeleteVolume")})
	must(t, err)
	// A failing call logs its request and error: the secret stays out.
	_, _ = c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "bad/id", Secrets: sec.new("local DeleteVolume (refused)")})

	// The s3 driver, each mounter: the keys are real (they must work), and
	// a distinct extra value rides along in every call.
	sec.values[s3.SecretKey] = "the s3 secret key"
	keys := map[string]string{"accessKeyID": s3.AccessKey, "secretAccessKey": s3.SecretKey, "endpoint": s3.Endpoint}
	s3d := s3Door(t, bin, dir, filepath.Join(dir, "outside"), s3)
	c, n = s3d.p.ctrl(), s3d.p.nodeC()
	for _, kind := range []string{"builtin", "s3fs", "rclone"} {
		vol, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "sec-" + kind, VolumeCapabilities: []*csi.VolumeCapability{capa},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 32 << 20}, Parameters: map[string]string{"mounter": kind},
			Secrets: sec.with(keys, "s3 CreateVolume ("+kind+")")})
		must(t, err)
		id, vctx := vol.GetVolume().GetVolumeId(), vol.GetVolume().GetVolumeContext()
		stage, target := filepath.Join(s3d.dir, "sec-stage-"+kind), filepath.Join(s3d.dir, "sec-target-"+kind)
		_, err = n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: stage, VolumeCapability: capa, VolumeContext: vctx,
			Secrets: sec.with(keys, "s3 NodeStageVolume ("+kind+")")})
		must(t, err)
		_, err = n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: stage, TargetPath: target, VolumeCapability: capa, VolumeContext: vctx,
			Secrets: sec.with(keys, "s3 NodePublishVolume ("+kind+")")})
		must(t, err)
		_, err = c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 48 << 20},
			Secrets: sec.with(keys, "s3 ControllerExpandVolume ("+kind+")")})
		must(t, err)
		// While mounted: argv, environments and files.
		sec.scanProcs(t, "s3 "+kind+" mounted")
		sec.scanFiles(t, "s3 "+kind+" mounted", start, dir, "/run")
		_, err = n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
		must(t, err)
		_, err = n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: stage})
		must(t, err)
		_, err = c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: sec.with(keys, "s3 DeleteVolume ("+kind+")")})
		must(t, err)
	}
	// s3fs's password file is gone with its mount.
	_ = filepath.WalkDir(filepath.Join(dir, "mounter"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "passwd" {
			t.Errorf("s3fs password file left after unmount: %s", path)
		}
		return nil
	})

	// volplug adapt over the flex driver: secrets reach the driver's argv
	// (documented, as kubelet passes them), never the logs.
	ad := adaptDoor(t, bin, dir, filepath.Join(dir, "outside"))
	c, n = ad.p.ctrl(), ad.p.nodeC()
	avol, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "sec", VolumeCapabilities: []*csi.VolumeCapability{capa},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 32 << 20}, Secrets: sec.new("adapt CreateVolume")})
	must(t, err)
	aid, actx := avol.GetVolume().GetVolumeId(), avol.GetVolume().GetVolumeContext()
	pub, err := c.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: aid, NodeId: node, VolumeCapability: capa, VolumeContext: actx, Secrets: sec.new("adapt ControllerPublishVolume")})
	must(t, err)
	astage, atarget := filepath.Join(ad.dir, "sec-stage"), filepath.Join(ad.dir, "sec-target")
	_, err = n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: aid, StagingTargetPath: astage, VolumeCapability: capa, VolumeContext: actx,
		PublishContext: pub.GetPublishContext(), Secrets: sec.new("adapt NodeStageVolume")})
	must(t, err)
	_, err = n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: aid, StagingTargetPath: astage, TargetPath: atarget, VolumeCapability: capa, VolumeContext: actx,
		PublishContext: pub.GetPublishContext(), Secrets: sec.new("adapt NodePublishVolume")})
	must(t, err)
	_, err = n.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: aid, VolumePath: atarget, StagingTargetPath: astage, CapacityRange: &csi.CapacityRange{RequiredBytes: 48 << 20}, Secrets: sec.new("adapt NodeExpandVolume")})
	if c := status.Code(err); c != codes.FailedPrecondition && c != codes.Internal {
		must(t, err)
	}
	_, err = n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: aid, TargetPath: atarget})
	must(t, err)
	_, err = n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: aid, StagingTargetPath: astage})
	must(t, err)
	_, err = c.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: aid, NodeId: node, Secrets: sec.new("adapt ControllerUnpublishVolume")})
	must(t, err)
	_, err = c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: aid, Secrets: sec.new("adapt DeleteVolume")})
	must(t, err)

	// volplug flex as kubelet runs it, with kubernetes.io/secret/* options.
	f := flexDoorSetUp(t, bin, dir, filepath.Join(dir, "outside"))
	pod := f.podDir(t, "sec")
	secret := sec.new("flex mount")["password"]
	res := f.run(t, "mount", pod, f.opts(map[string]string{"image": "sec", "size": "16Mi",
		flex.SecretPrefix + "password": base64.StdEncoding.EncodeToString([]byte(secret))}))
	if res.Status != flex.StatusSuccess {
		t.Fatalf("flex mount: %s", res.Message)
	}
	bad := sec.new("flex mount (refused)")["password"]
	f.run(t, "mount", pod, f.opts(map[string]string{"image": "sec", "evil": "1", flex.SecretPrefix + "password": base64.StdEncoding.EncodeToString([]byte(bad))}))
	if res := f.run(t, "unmount", pod); res.Status != flex.StatusSuccess {
		t.Errorf("flex unmount: %s", res.Message)
	}
	f.teardown(t)

	for _, d := range []*door{local, s3d, ad} {
		d.teardown(t)
	}
	killMounter(filepath.Join(dir, "mounter", "mounter.sock"))
	sec.scanProcs(t, "at the end")
	sec.scanFiles(t, "at the end", start, dir, "/tmp", "/run")
	// The logs must show the calls, or the check above proves nothing.
	for _, log := range []string{filepath.Join(local.dir, "driver.log"), filepath.Join(ad.dir, "flex.log"), filepath.Join(f.dir, "flex.log")} {
		data, err := os.ReadFile(log)
		must(t, err)
		if !bytes.Contains(data, []byte("sec")) {
			t.Errorf("%s does not show the calls", log)
		}
	}
	testutil.CheckClean(t, dir)
}
