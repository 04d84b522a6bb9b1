// Package sanity runs the official CSI conformance suite (csi-test's
// csi-sanity) against the real driver over a unix socket: real disk images,
// loop devices and mounts. It needs root.
package sanity

import (
	"context"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/volplug/volplug/internal/backend/local"
	"github.com/volplug/volplug/internal/csi"
	"github.com/volplug/volplug/internal/testutil"
)

// variant is one way to run the driver; the suite runs once per variant.
type variant struct {
	name       string
	accessType string // mount or block
	fsType     string // by storage-class parameter; "" for the default, ext4
	attach     bool
	maxPerNode int64
	// expandOnNode: the deployment mode where NodeExpandVolume grows the
	// disk (xfs: online growth needs no capability this sandbox lacks).
	expandOnNode bool
	// split runs the controller and the node service as two drivers
	// (--mode=controller, --mode=node) on one pool, as a deployment may.
	split bool
	// s3: the object-storage backend, on a real S3 server on loopback,
	// with a mounter in this process; mounter is the kind it uses.
	s3      bool
	mounter string
	// native: layout "native" (btrfs subvolumes with quotas) on a pool
	// that is a btrfs filesystem of its own.
	native bool
}

var variants = []variant{
	{name: "mount ext4, attach", accessType: "mount", attach: true, maxPerNode: 4},
	{name: "mount xfs, no attach, expand on node", accessType: "mount", fsType: "xfs", expandOnNode: true},
	{name: "block, attach", accessType: "block", attach: true, maxPerNode: 4},
	{name: "block, no attach", accessType: "block"},
	{name: "mount btrfs, attach, split controller and node", accessType: "mount", fsType: "btrfs", attach: true, maxPerNode: 4, split: true},
	{name: "native layout on a btrfs pool, attach", accessType: "mount", native: true, attach: true, maxPerNode: 4},
	{name: "s3, a bucket per volume, built-in mounter", accessType: "mount", s3: true},
	{name: "s3, a prefix per volume, s3fs, split controller and node", accessType: "mount", s3: true, mounter: "s3fs", split: true},
}

func TestSanity(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	objects := startObjectStorage(t, dir)
	var pools []func() error // btrfs pools, taken down before CheckClean
	for i, v := range variants {
		base := filepath.Join(dir, string(rune('a'+i)))
		cfg := sanity.NewTestConfig()
		if v.s3 {
			cfg = objects.config(t, base, v)
			Describe(v.name, func() { sanity.GinkgoTest(&cfg) })
			continue
		}
		if v.native {
			// Before the driver starts, so it comes down after it stops.
			_, down := testutil.BtrfsPool(t, base, "pool", 4*local.GiB)
			pools = append(pools, down)
		}
		if v.split {
			cfg.Address = startDriver(t, base, "node", csi.ModeNode, v)
			cfg.ControllerAddress = startDriver(t, base, "controller", csi.ModeController, v)
		} else {
			cfg.Address = startDriver(t, base, "all", csi.ModeAll, v)
		}
		cfg.TargetPath = filepath.Join(base, "target")
		cfg.StagingPath = filepath.Join(base, "staging")
		// Big enough for every filesystem's minimum, small enough that the
		// volumes sanity keeps at once fit this machine's disk.
		cfg.TestVolumeSize = 512 * local.MiB
		cfg.TestVolumeAccessType = v.accessType
		cfg.TestNodeVolumeAttachLimit = v.maxPerNode > 0
		cfg.IdempotentCount = 3
		cfg.TestVolumeMutableParameters = map[string]string{"directIO": "false"}
		if v.fsType != "" {
			cfg.TestVolumeParameters = map[string]string{"fsType": v.fsType}
		}
		if v.native {
			cfg.TestVolumeParameters = map[string]string{"layout": "native"}
		}
		Describe(v.name, func() { sanity.GinkgoTest(&cfg) })
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "csi-sanity on volplug local")

	for _, down := range pools {
		if err := down(); err != nil {
			t.Error(err)
		}
	}
	testutil.CheckClean(t, dir)
}

func startDriver(t *testing.T, base, name string, mode csi.Mode, v variant) string {
	b, err := local.New(filepath.Join(base, "pool"), "sanity-node", local.FormatOnCreate(true), local.DeleteInBackground(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() }) // after serve's cleanup: it runs first
	d, err := csi.New(csi.Options{
		Name: "local.csi.volplug.io", NodeID: "sanity-node", Mode: mode,
		EnableAttach: v.attach, MaxVolumesPerNode: v.maxPerNode, ExpandOnNode: v.expandOnNode,
	}, b)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, d, filepath.Join(base, name+".sock"))
}

// serve runs d on a unix socket until the test ends.
func serve(t *testing.T, d *csi.Driver, sock string) string {
	l, err := csi.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "unix://" + sock
}
