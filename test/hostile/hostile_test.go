package hostile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/testutil"
)

// table collects every case's outcome; TestHostileInput writes it to the
// file named by $VOLPLUG_HOSTILE_TABLE when set (the report's table).
type table struct {
	rows []string
}

func (tb *table) add(door, rpc, input, got, rule string) {
	tb.rows = append(tb.rows, fmt.Sprintf("| %s | %s | %s | %s | %s |", door, rpc, strings.ReplaceAll(input, "|", `\|`), got, rule))
}

func (tb *table) write(t *testing.T) {
	path := os.Getenv("VOLPLUG_HOSTILE_TABLE")
	if path == "" {
		return
	}
	head := "| door | call | hostile input | answer | rule |\n|---|---|---|---|---|\n"
	if err := os.WriteFile(path, []byte(head+strings.Join(tb.rows, "\n")+"\n"), 0o644); err != nil {
		t.Error(err)
	}
}

// TestHostileInput runs the table against `volplug csi --backend=local`,
// `volplug csi --backend=s3` (a real versitygw), `volplug adapt` over the
// installed `volplug flex`, and `volplug flex` run as kubelet runs it.
func TestHostileInput(t *testing.T) {
	dir := rootTest(t)
	bin := testutil.BuildVolplug(t, t.TempDir())
	s3 := testutil.StartS3Server(t)
	outside := filepath.Join(dir, "outside")
	must(t, os.MkdirAll(outside, 0o755))
	must(t, os.WriteFile(filepath.Join(outside, "victim"), []byte("precious"), 0o644))
	// Another mount on the host a symlink may point at.
	otherMount := filepath.Join(dir, "other-mount")
	must(t, os.MkdirAll(otherMount, 0o755))
	must(t, mountTmpfs(otherMount))

	w := newWatcher(dir, s3.Client(t), filepath.Dir(s3.Dir), filepath.Join(dir, "mounter"))
	if !strings.HasPrefix(s3.Dir, dir) {
		w.skip = w.skip[1:]
	}
	tb := &table{}
	defer tb.write(t)

	doors := []*door{
		localDoor(t, bin, dir, outside),
		s3Door(t, bin, dir, outside, s3),
		adaptDoor(t, bin, dir, outside),
	}
	for _, d := range doors {
		d.otherMount = otherMount
		for _, l := range d.symlinks() {
			target := map[string]string{"symlink to /": "/", "symlink to another mount": otherMount, "symlink to outside dir": outside}[l.label]
			must(t, os.Symlink(target, l.v))
		}
	}
	ctx := context.Background()
	for _, d := range doors {
		if only := os.Getenv("VOLPLUG_HOSTILE_ONLY"); only != "" && !strings.Contains(only, d.name) {
			continue
		}
		// Only the s3 door can touch a bucket: the others skip the listing.
		w.listBuckets = d.name == "s3"
		cases := slices.Concat(d.idCases(), d.pathCases(), d.flagCases(), d.sizeCases())
		t.Run(d.name, func(t *testing.T) {
			loops := w.checkAllLoops(t, nil)
			defer func() { w.checkAllLoops(t, loops) }()
			var snapTotal, callTotal time.Duration
			defer func() { t.Logf("%d cases: calls %v, snapshots %v", len(cases), callTotal, snapTotal*2) }()
			for _, c := range cases {
				start := time.Now()
				before := w.snapshot(t)
				snapTime := time.Since(start)
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := c.call(cctx)
				cancel()
				callTime := time.Since(start) - snapTime
				after := w.snapshot(t)
				snapTotal += snapTime
				callTotal += callTime
				if callTime > 500*time.Millisecond {
					t.Logf("slow: %s %s [%s]: %v (snapshot %v)", c.door, c.rpc, c.input, callTime, snapTime)
				}
				got := status.Code(err)
				if err == errCreatedAndDeleted {
					got = codes.OK
				}
				answer := got.String()
				if err != nil && got == codes.Unknown {
					answer = "error: " + err.Error()
				}
				tb.add(c.door, c.rpc, c.input, answer, c.rule)
				if !slices.Contains(c.want, got) || (got == codes.Unknown && err != nil) {
					t.Errorf("%s %s [%s]: got %v (%v), want one of %v", c.door, c.rpc, c.input, got, status.Convert(err).Message(), c.want)
				}
				if d := diff(before, after); d != "" {
					t.Errorf("%s %s [%s] changed the host:\n%s", c.door, c.rpc, c.input, d)
				}
			}
		})
	}
	t.Run("flex", func(t *testing.T) {
		w.listBuckets = false
		f := flexDoorSetUp(t, bin, dir, outside)
		loops := w.checkAllLoops(t, nil)
		var snapTotal, callTotal time.Duration
		cases := f.cases()
		defer func() { t.Logf("%d cases: calls %v, snapshots %v", len(cases), callTotal, snapTotal*2) }()
		for _, c := range cases {
			start := time.Now()
			before := w.snapshot(t)
			snapTime := time.Since(start)
			res := f.run(t, c.args...)
			callTotal += time.Since(start) - snapTime
			snapTotal += snapTime
			after := w.snapshot(t)
			answer := string(res.Status)
			if res.Code != "" {
				answer += " " + res.Code
			}
			tb.add("flex", c.call, c.input, answer, ruleFlex)
			if c.notSupported && res.Status == "Not supported" {
				// the protocol's answer
			} else if res.Status != "Failure" || (c.wantCode != "" && res.Code != c.wantCode) {
				t.Errorf("flex %s [%s]: %s %s (%s), want Failure %s", c.call, c.input, res.Status, res.Code, res.Message, c.wantCode)
			}
			if d := diff(before, after); d != "" {
				t.Errorf("flex %s [%s] changed the host:\n%s", c.call, c.input, d)
			}
		}
		w.checkAllLoops(t, loops)
		f.teardown(t)
	})
	for _, d := range doors {
		d.teardown(t)
	}
	must(t, unmountAll(otherMount))
	testutil.CheckClean(t, dir)
}

// teardown unpublishes, unstages, detaches and deletes the door's volume.
func (d *door) teardown(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	n, c := d.p.nodeC(), d.p.ctrl()
	_, err := n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: d.vol, TargetPath: d.target})
	must(t, err)
	_, err = n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: d.vol, StagingTargetPath: d.staging})
	must(t, err)
	if d.attach {
		_, err = c.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: d.vol, NodeId: node, Secrets: d.secrets})
		must(t, err)
	}
	_, err = c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: d.vol, Secrets: d.secrets})
	must(t, err)
	d.p.stop()
}

// setUp creates, attaches, stages and publishes the door's good volume.
func (d *door) setUp(t *testing.T, name string, size int64) {
	t.Helper()
	ctx := context.Background()
	c, n := d.p.ctrl(), d.p.nodeC()
	capa := cap1(rw)
	resp, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: []*csi.VolumeCapability{capa},
		CapacityRange: &csi.CapacityRange{RequiredBytes: size}, Parameters: d.params, Secrets: d.secrets})
	must(t, err)
	d.vol = resp.GetVolume().GetVolumeId()
	vctx := resp.GetVolume().GetVolumeContext()
	var pc map[string]string
	if d.attach {
		pub, err := c.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: d.vol, NodeId: node, VolumeCapability: capa, Secrets: d.secrets, VolumeContext: vctx})
		must(t, err)
		pc = pub.GetPublishContext()
	}
	d.staging, d.target = filepath.Join(d.dir, "staging"), filepath.Join(d.dir, "target")
	_, err = n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: d.vol, StagingTargetPath: d.staging, VolumeCapability: capa,
		PublishContext: pc, VolumeContext: vctx, Secrets: d.secrets})
	must(t, err)
	_, err = n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: d.vol, StagingTargetPath: d.staging, TargetPath: d.target,
		VolumeCapability: capa, PublishContext: pc, VolumeContext: vctx, Secrets: d.secrets})
	must(t, err)
}

func localDoor(t *testing.T, bin, dir, outside string) *door {
	d := &door{name: "local", dir: filepath.Join(dir, "local"), outside: outside, snapshots: true, groups: true, attach: true, ephemeral: true}
	must(t, os.MkdirAll(d.dir, 0o755))
	d.p = startProc(t, bin, d.dir, "driver", "csi", "--backend=local", "--pool", filepath.Join(d.dir, "pool"),
		"--node-id", node, "--enable-attach", "--v", "5", "--delete-in-background=false")
	d.setUp(t, "good", 32<<20)
	return d
}

func s3Door(t *testing.T, bin, dir, outside string, s3 *testutil.S3Server) *door {
	d := &door{name: "s3", dir: filepath.Join(dir, "s3"), outside: outside,
		secrets: map[string]string{"accessKeyID": s3.AccessKey, "secretAccessKey": s3.SecretKey, "endpoint": s3.Endpoint}}
	must(t, os.MkdirAll(d.dir, 0o755))
	d.p = startProc(t, bin, d.dir, "driver", "csi", "--backend=s3", "--node-id", node, "--v", "5",
		"--mounter-socket", filepath.Join(dir, "mounter", "mounter.sock"),
		"--mounter-state-dir", filepath.Join(dir, "mounter", "state"),
		"--mounter-log", filepath.Join(dir, "mounter", "mounter.log"))
	t.Cleanup(func() { killMounter(filepath.Join(dir, "mounter", "mounter.sock")) })
	d.setUp(t, "good-bucket", 32<<20)
	return d
}

func adaptDoor(t *testing.T, bin, dir, outside string) *door {
	d := &door{name: "adapt", dir: filepath.Join(dir, "adapt"), outside: outside, attach: true}
	must(t, os.MkdirAll(d.dir, 0o755))
	exe := installFlex(t, bin, filepath.Join(d.dir, "plugins"), "local", filepath.Join(d.dir, "pool"), filepath.Join(d.dir, "flex.log"), true)
	d.p = startProc(t, bin, d.dir, "adapter", "adapt", "--driver-path", exe, "--driver-name", "flex.volplug.io",
		"--node-id", node, "--v", "5")
	d.setUp(t, "good", 32<<20)
	return d
}
