package crash

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

// A node reboots: every mount, loop device and volplug process vanishes
// (here: torn down from outside, the drivers and the mounter killed with
// SIGKILL) while the pool and the buckets stay, and kubelet's paths stay
// as empty directories. kubelet then retries NodeStage and NodePublish for
// the pods that come back, which must bring each volume back with the
// data fsync'd before the reboot; for pods deleted meanwhile it calls
// NodeUnpublish and NodeUnstage of mounts that are gone, which must
// succeed. Image volumes (ext4 and xfs) and a native volume on a btrfs
// pool, and a bucket through the mounter.
func TestNodeReboot(t *testing.T) {
	testutil.RequireRoot(t)
	s3 := testutil.StartS3Server(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	poolParent := filepath.Join(dir, "btrfs")
	pool, down := testutil.BtrfsPool(t, poolParent, "pool", 2<<30)

	local := newHarness(t, mkdir(t, filepath.Join(dir, "local")), pool, "--pool", pool)
	sock := filepath.Join(dir, "s3", "run", "mounter.sock")
	objects := newHarness(t, mkdir(t, filepath.Join(dir, "s3")), "", "--backend=s3", "--mounter-socket="+sock,
		"--mounter-state-dir="+filepath.Join(dir, "s3", "mounter"), "--mounter-log="+filepath.Join(dir, "s3", "mounter.log"))
	objects.secrets = map[string]string{"accessKeyID": s3.AccessKey, "secretAccessKey": s3.SecretKey, "endpoint": s3.Endpoint}
	t.Cleanup(func() {
		for _, pid := range processesNaming("mounter\x00--socket\x00" + sock) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	local.d.start("")
	objects.d.start("")

	type kind struct {
		h      *harness
		name   string
		fs     string
		params map[string]string
		size   int64
	}
	kinds := []kind{
		{local, "ext4", "ext4", nil, 32 * mi},
		{local, "xfs", "xfs", nil, 300 * mi},
		{local, "native", "btrfs", map[string]string{"layout": "native"}, 64 * mi},
		{objects, "bucket", "", nil, 16 * mi},
	}
	fates := []string{"back", "gone"}
	for _, k := range kinds {
		for _, fate := range fates {
			n := k.name + "-" + fate
			k.h.run([]step{k.h.create(n, k.size, mountCap(k.fs), k.params, nil), k.h.stage(n), k.h.publish(n), k.h.write(n)})
		}
	}

	reboot(t, dir, filepath.Join(poolParent, "pool.img"), pool, sock, local, objects)

	local.d.start("")
	objects.d.start("")
	for _, k := range kinds {
		back, gone := k.name+"-back", k.name+"-gone"
		k.h.run([]step{k.h.stage(back), k.h.publish(back), k.h.unpublish(gone), k.h.unstage(gone)})
	}
	local.agree("") // mounted again, data intact, writable
	objects.agree("")
	for _, k := range kinds {
		back, gone := k.name+"-back", k.name+"-gone"
		k.h.run([]step{k.h.unpublish(back), k.h.unstage(back), k.h.deleteVolume(back), k.h.deleteVolume(gone)})
	}
	local.finish("")
	objects.finish("")
	local.checkEmptyPool()
	if buckets, err := s3.Client(t).ListBuckets(context.Background()); err != nil || len(buckets) > 0 {
		t.Errorf("buckets left: %v %v", buckets, err)
	}
	for _, pid := range processesNaming("mounter\x00--socket\x00" + sock) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	waitGone(t, "mounter\x00--socket\x00"+sock)
	if err := down(); err != nil {
		t.Error(err)
	}
	testutil.CheckClean(t, dir)
}

// reboot kills every volplug process of the test and takes down every
// mount and loop device under dir, then mounts the btrfs pool again from
// its image, as the node's fstab would.
func reboot(t *testing.T, dir, poolImage, pool, mounterSock string, hs ...*harness) {
	t.Helper()
	for _, h := range hs {
		h.d.stop(syscall.SIGKILL)
	}
	for _, pid := range processesNaming("mounter\x00--socket\x00" + mounterSock) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	waitGone(t, "mounter\x00--socket\x00"+mounterSock)
	testutil.Cleanup(dir)
	testutil.CheckClean(t, dir) // the reboot really took everything down
	if t.Failed() {
		t.FailNow()
	}
	dev, err := loop.Attach(poolImage, loop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, pool, "btrfs", 0, ""); err != nil {
		_ = loop.DetachImage(poolImage)
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, dir string) string {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}
