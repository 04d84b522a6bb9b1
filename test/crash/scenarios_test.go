package crash

import (
	"context"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/volplug/volplug/internal/testutil"
)

const mi = int64(1) << 20

// scenarios: a volume's whole life on each kind of storage, with every
// operation that mutates something, in the order a cluster would run them.
var scenarios = map[string]func(t *testing.T, arm string){
	"image":          func(t *testing.T, arm string) { imageScenario(t, arm) },
	"image-noformat": func(t *testing.T, arm string) { imageScenario(t, arm, "--format-on-create=false") },
	"native":         nativeScenario,
	"s3":             s3Scenario,
}

// imageScenario: images on an ext4 pool (so copies are sparse copies,
// extent by extent). a (xfs): create, stage, publish, write; snapshot it
// while mounted (frozen); restore the snapshot larger (b, grown at
// stage); clone the live volume (c, frozen); grow a online; change a
// mutable parameter; snapshot a and c as a group (both frozen); check
// every copy's data. e (ext4): grown while not staged, so its stage grows
// it offline (ext4 online growth needs CAP_SYS_RESOURCE, which a
// sandbox may lack). Then take it all down and delete it.
func imageScenario(t *testing.T, arm string, args ...string) {
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	pool := filepath.Join(dir, "pool")
	h := newHarness(t, dir, pool, append([]string{"--pool", pool}, args...)...)
	h.d.start(arm)
	xfs, ext4 := mountCap("xfs"), mountCap("ext4")
	var steps []step
	steps = append(steps,
		h.create("a", 300*mi, xfs, nil, nil), h.stage("a"), h.publish("a"), h.write("a"),
		h.snapshot("s1", "a"),
		h.createFrom("b", 320*mi, xfs, nil, fromSnapshot(h, "s1")),
		h.createFrom("c", 300*mi, xfs, nil, fromVolume(h, "a")),
	)
	steps = append(steps, h.expand("a", 340*mi)...)
	steps = append(steps,
		h.modify("a", map[string]string{"directIO": "false"}),
		h.stage("c"), h.publish("c"), h.holds("c", "a"),
		h.groupSnapshot("g", "a", "c"),
		h.stage("b"), h.publish("b"), h.holds("b", "a"),
		h.create("e", 16*mi, ext4, nil, nil), h.expand("e", 24*mi)[0], h.stage("e"), h.publish("e"), h.write("e"),
		h.unpublish("b"), h.unstage("b"), h.unpublish("c"), h.unstage("c"), h.unpublish("a"), h.unstage("a"),
		h.unpublish("e"), h.unstage("e"),
		h.deleteGroup("g"), h.deleteSnapshot("s1"),
		h.deleteVolume("b"), h.deleteVolume("c"), h.deleteVolume("a"), h.deleteVolume("e"),
	)
	h.run(steps)
	h.finish(arm)
	h.checkEmptyPool()
	testutil.CheckClean(t, dir)
}

// nativeScenario: btrfs subvolumes with a qgroup limit on a btrfs pool.
func nativeScenario(t *testing.T, arm string) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	pool, down := testutil.BtrfsPool(t, filepath.Join(dir, "btrfs"), "pool", 1<<30)
	h := newHarness(t, dir, pool, "--pool", pool)
	h.d.start(arm)
	native := map[string]string{"layout": "native"}
	btrfs := mountCap("btrfs")
	var steps []step
	steps = append(steps,
		h.create("n", 64*mi, btrfs, native, nil), h.stage("n"), h.publish("n"), h.write("n"),
		h.snapshot("ns", "n"),
		h.createFrom("m", 64*mi, btrfs, native, fromSnapshot(h, "ns")),
	)
	steps = append(steps, h.expand("n", 96*mi)...)
	steps = append(steps,
		h.stage("m"), h.publish("m"), h.holds("m", "n"),
		h.unpublish("m"), h.unstage("m"), h.unpublish("n"), h.unstage("n"),
		h.deleteSnapshot("ns"), h.deleteVolume("m"), h.deleteVolume("n"),
	)
	h.run(steps)
	h.finish(arm)
	h.checkEmptyPool()
	if err := down(); err != nil {
		t.Error(err)
	}
	testutil.CheckClean(t, dir)
}

// s3Scenario: a bucket per volume on a real S3 server, mounted by the
// built-in FUSE filesystem in the detached mounter the driver starts.
func s3Scenario(t *testing.T, arm string) {
	testutil.RequireRoot(t)
	s3 := testutil.StartS3Server(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	sock := filepath.Join(dir, "run", "mounter.sock")
	h := newHarness(t, dir, "", "--backend=s3", "--mounter-socket="+sock,
		"--mounter-state-dir="+filepath.Join(dir, "mounter"), "--mounter-log="+filepath.Join(dir, "mounter.log"))
	t.Cleanup(func() {
		for _, pid := range processesNaming("mounter\x00--socket\x00" + sock) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	h.secrets = map[string]string{"accessKeyID": s3.AccessKey, "secretAccessKey": s3.SecretKey, "endpoint": s3.Endpoint}
	h.d.start(arm)
	capa := mountCap("")
	var steps []step
	steps = append(steps, h.create("bucket-vol", 16*mi, capa, nil, nil), h.stage("bucket-vol"), h.publish("bucket-vol"), h.write("bucket-vol"))
	steps = append(steps, h.expand("bucket-vol", 32*mi)...)
	steps = append(steps, h.unpublish("bucket-vol"), h.unstage("bucket-vol"), h.deleteVolume("bucket-vol"))
	h.run(steps)
	h.finish(arm)

	buckets, err := s3.Client(t).ListBuckets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(buckets, func(b minio.BucketInfo) bool { return true }); i >= 0 {
		t.Errorf("buckets left on the server: %v", buckets)
	}
	// The mounter serves nothing now; stopped, it must leave no private
	// directory behind.
	for _, pid := range processesNaming("mounter\x00--socket\x00" + sock) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	waitGone(t, "mounter\x00--socket\x00"+sock)
	checkNoFiles(t, filepath.Join(dir, "mounter"))
	testutil.CheckClean(t, dir)
}
