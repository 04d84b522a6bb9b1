package flexdriver

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/internal/testutil"
	"github.com/volplug/volplug/pkg/flex"
)

// rootEnv is newEnv for tests on real loop devices and mounts, with the
// cleanup and leak check every such test owes the machine.
func rootEnv(t *testing.T, attach bool) *env {
	testutil.RequireRoot(t)
	e := newEnv(t, attach)
	t.Cleanup(func() { testutil.Cleanup(e.dir) })
	return e
}

// podDir makes a pod volume directory as kubelet does before mount.
func (e *env) podDir(name string) string {
	dir := filepath.Join(e.dir, "kubelet", "pods", name, "volumes", "volplug~local", "vol")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

func mounted(t *testing.T, path string) bool {
	t.Helper()
	info, err := mount.New().Mounted(path)
	if err != nil {
		t.Fatal(err)
	}
	return info != nil
}

func attachedLoops(t *testing.T, dir string) int {
	t.Helper()
	devs, err := loop.Devices()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range devs {
		if strings.HasPrefix(d.Backing.Path, dir+"/") {
			n++
		}
	}
	return n
}

const secretValue = "s3cr3t-hunter2-value"

// TestNonAttachable is what kubelet does with a driver that reports
// attach:false: mount and unmount only, the stage shared by pods.
func TestNonAttachable(t *testing.T) {
	e := rootEnv(t, false)
	e.run(flex.StatusSuccess, "init")
	opts := options("pv-a", map[string]string{
		"size": "64Mi", flex.KeyPodName: "p1", flex.KeyPodNamespace: "ns", flex.KeyPodUID: "uid-1",
		flex.KeyFsGroup:                "2000",
		flex.SecretPrefix + "password": base64.StdEncoding.EncodeToString([]byte(secretValue)),
	})
	roOpts := strings.Replace(opts, `"kubernetes.io/readwrite":"rw"`, `"kubernetes.io/readwrite":"ro"`, 1)
	pod1, pod2 := e.podDir("p1"), e.podDir("p2")

	e.run(flex.StatusSuccess, "mount", pod1, opts)
	e.run(flex.StatusSuccess, "mount", pod1, opts) // kubelet repeats after a restart
	if err := os.WriteFile(filepath.Join(pod1, "data"), []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}

	// A second pod shares the stage, read-only.
	e.run(flex.StatusSuccess, "mount", pod2, roOpts)
	if err := os.WriteFile(filepath.Join(pod2, "x"), nil, 0o600); !errors.Is(err, unix.EROFS) {
		t.Errorf("write to a read-only mount: %v, want EROFS", err)
	}
	if got, _ := os.ReadFile(filepath.Join(pod2, "data")); string(got) != "kept" {
		t.Errorf("second pod reads %q", got)
	}

	e.run(flex.StatusSuccess, "unmount", pod1)
	e.run(flex.StatusSuccess, "unmount", pod1) // unmounting twice succeeds
	if mounted(t, pod1) || !mounted(t, pod2) {
		t.Fatal("unmount took the wrong mount")
	}
	if attachedLoops(t, e.dir) != 1 {
		t.Fatal("the stage went while a pod still uses it")
	}
	e.run(flex.StatusSuccess, "unmount", pod2)
	if n := attachedLoops(t, e.dir); n != 0 {
		t.Fatalf("%d loop devices left after the last unmount", n)
	}

	pod1 = e.podDir("p1") // kubelet made it again
	e.run(flex.StatusSuccess, "mount", pod1, opts)
	if got, _ := os.ReadFile(filepath.Join(pod1, "data")); string(got) != "kept" {
		t.Errorf("after a remount: %q, want the data written before", got)
	}
	e.run(flex.StatusSuccess, "unmount", pod1)

	checkLog(t, e.logs)
	testutil.CheckClean(t, e.dir)
}

// checkLog: the log is private and holds no secret, in any encoding.
func checkLog(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		t.Error("nothing logged")
	}
	for _, s := range []string{secretValue, base64.StdEncoding.EncodeToString([]byte(secretValue))} {
		if strings.Contains(string(data), s) {
			t.Errorf("the log holds the secret (%q)", s)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("log file mode: %v %v, want 0600", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("log dir mode: %v %v, want 0700", st.Mode(), err)
	}
}

// TestAttachable is the attachable sequence, as controller-manager and
// kubelet run it; every call is repeated, since both retry.
func TestAttachable(t *testing.T) {
	e := rootEnv(t, true)
	if c := e.run(flex.StatusSuccess, "init").Capabilities; c == nil || !c.Attach {
		t.Fatalf("capabilities %+v", c)
	}
	// `image` names the disk; detach is given only the PV name.
	opts := options("pv-b", map[string]string{"image": "disk-b", "size": "64Mi",
		flex.SecretPrefix + "token": base64.StdEncoding.EncodeToString([]byte(secretValue))})
	global := filepath.Join(e.dir, "kubelet", "plugins", "kubernetes.io", "flexvolume", "volplug", "local", "mounts", "pv-b")
	pod := e.podDir("p1")

	if r := e.run(flex.StatusSuccess, "isattached", opts, "node1"); r.Attached == nil || *r.Attached {
		t.Fatalf("isattached before attach: %+v", r.Attached)
	}
	device := e.run(flex.StatusSuccess, "attach", opts, "node1").Device
	if !strings.HasPrefix(device, "vol-") {
		t.Fatalf("device %q, want a volume ID", device)
	}
	if again := e.run(flex.StatusSuccess, "attach", opts, "node1").Device; again != device {
		t.Fatalf("second attach: device %q, want %q", again, device)
	}
	e.run(flex.StatusFailure, "attach", opts, "other-node") // the disk is on node1
	for i := 0; i < 2; i++ {
		if r := e.run(flex.StatusSuccess, "isattached", opts, "node1"); r.Attached == nil || !*r.Attached {
			t.Fatalf("isattached: %+v", r.Attached)
		}
		if r := e.run(flex.StatusSuccess, "isattached", opts, "node2"); r.Attached == nil || *r.Attached {
			t.Fatal("attached to node2?")
		}
		if got := e.run(flex.StatusSuccess, "waitforattach", device, opts).Device; got != device {
			t.Fatalf("waitforattach: %q", got)
		}
	}
	if err := os.MkdirAll(global, 0o750); err != nil { // kubelet's prepareForMount
		t.Fatal(err)
	}
	e.run(flex.StatusSuccess, "mountdevice", global, device, opts)
	e.run(flex.StatusSuccess, "mountdevice", global, device, opts)
	e.run(flex.StatusSuccess, "mount", pod, opts)
	e.run(flex.StatusSuccess, "mount", pod, opts)
	if err := os.WriteFile(filepath.Join(pod, "data"), []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(global, "data")); string(got) != "kept" {
		t.Fatal("the pod does not see the staged volume")
	}
	for i := 0; i < 2; i++ {
		e.run(flex.StatusSuccess, "unmount", pod)
		if !mounted(t, global) {
			t.Fatal("unmount took the device mount away")
		}
	}
	for i := 0; i < 2; i++ {
		e.run(flex.StatusSuccess, "unmountdevice", global)
	}
	if mounted(t, global) || attachedLoops(t, e.dir) != 0 {
		t.Fatal("unmountdevice left the volume staged")
	}
	for i := 0; i < 2; i++ {
		e.run(flex.StatusSuccess, "detach", "pv-b", "node1")
	}
	if r := e.run(flex.StatusSuccess, "isattached", opts, "node1"); r.Attached == nil || *r.Attached {
		t.Fatal("still attached after detach")
	}

	checkLog(t, e.logs)
	testutil.CheckClean(t, e.dir)
}

// TestUnmountForeign: unmount never takes away a mount the driver did not
// make, and mount in attach mode wants mountdevice first.
func TestUnmountForeign(t *testing.T) {
	e := rootEnv(t, true)
	pod := e.podDir("p1")
	if err := unix.Mount("tmpfs", pod, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	e.run(flex.StatusFailure, "unmount", pod)
	e.run(flex.StatusFailure, "unmountdevice", pod)
	if !mounted(t, pod) {
		t.Fatal("a foreign mount was taken away")
	}
	if err := unix.Unmount(pod, 0); err != nil {
		t.Fatal(err)
	}
	opts := options("pv-c", map[string]string{"size": "16Mi"})
	e.run(flex.StatusSuccess, "attach", opts, "node1")
	e.run(flex.StatusFailure, "mount", pod, opts) // not staged: mountdevice first
	testutil.CheckClean(t, e.dir)
}

// TestExpand grows a mounted volume the way controller-manager
// (expandvolume) and kubelet (expandfs) do, when the backend can.
func TestExpand(t *testing.T) {
	if _, ok := any(localStore{}).(volumeExpander); !ok {
		t.Skip("the local backend cannot grow volumes")
	}
	e := rootEnv(t, false)
	if c := e.run(flex.StatusSuccess, "init").Capabilities; !c.RequiresFSResize {
		t.Error("requiresFSResize should follow the backend")
	}
	opts := options("pv-grow", map[string]string{"size": "64Mi"})
	pod := e.podDir("p1")
	e.run(flex.StatusSuccess, "mount", pod, opts)
	const newSize = 128 << 20
	res := e.run(flex.StatusSuccess, "expandvolume", opts, "", "134217728", "67108864")
	if res.VolumeNewSize < newSize {
		t.Errorf("volumeNewSize %d", res.VolumeNewSize)
	}
	missing := filepath.Join(e.dir, "no-device-mount-path") // none without attach
	fsArgs := []string{"expandfs", opts, "", missing, "134217728", "67108864"}
	if !hasCapSysResource(t) {
		// Online ext4 growth is an ioctl that needs CAP_SYS_RESOURCE.
		e.run(flex.StatusFailure, fsArgs...)
		t.Log("no CAP_SYS_RESOURCE here: expandfs fails as it must; its success is not checked")
	} else {
		e.run(flex.StatusSuccess, fsArgs...)
		var st unix.Statfs_t
		if err := unix.Statfs(pod, &st); err != nil {
			t.Fatal(err)
		}
		if total := int64(st.Blocks) * st.Bsize; total < 100<<20 {
			t.Errorf("the pod sees %d bytes after growing to %d", total, newSize)
		}
	}
	e.run(flex.StatusSuccess, "unmount", pod)
	testutil.CheckClean(t, e.dir)
}

func hasCapSysResource(t *testing.T) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}

// Two pods in different namespaces with an inline volume of the same name
// get two disks: a pod's volume name is not a cluster-wide identity.
func TestInlineVolumesDoNotCrossNamespaces(t *testing.T) {
	e := rootEnv(t, false)
	podA, podB := e.podDir("a"), e.podDir("b")
	optsFor := func(ns, uid string) string {
		return options("data", map[string]string{"size": "32Mi", flex.KeyPodNamespace: ns, flex.KeyPodUID: uid})
	}
	e.run(flex.StatusSuccess, "mount", podA, optsFor("team-a", "uid-a"))
	e.run(flex.StatusSuccess, "mount", podB, optsFor("team-b", "uid-b"))
	if err := os.WriteFile(filepath.Join(podA, "private"), []byte("team a only"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(podB, "private")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a pod in team-b sees team-a's file: %v", err)
	}
	e.run(flex.StatusSuccess, "unmount", podA)
	e.run(flex.StatusSuccess, "unmount", podB)
	testutil.CheckClean(t, e.dir)
}
