package hostile

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/pkg/flex"
)

// flexDoor is `volplug flex` installed as kubelet finds it (attach off:
// mount makes, stages and binds), with one pod volume mounted.
type flexDoor struct {
	exe, dir, outside string
	pod               string // a pod volume directory with the good volume mounted
}

type flexCase struct {
	call, input string
	args        []string
	wantCode    string // the Failure's code, "" for any
	// notSupported: the protocol's answer for a call the driver does
	// not have (kubelet then uses its default)
	notSupported bool
}

func flexDoorSetUp(t *testing.T, bin, dir, outside string) *flexDoor {
	f := &flexDoor{dir: filepath.Join(dir, "flex"), outside: outside}
	must(t, os.MkdirAll(f.dir, 0o755))
	f.exe = installFlex(t, bin, filepath.Join(f.dir, "plugins"), "local", filepath.Join(f.dir, "pool"), filepath.Join(f.dir, "flex.log"), false)
	f.pod = f.podDir(t, "good")
	if res := f.run(t, "mount", f.pod, f.opts(map[string]string{"image": "good", "size": "32Mi"})); res.Status != flex.StatusSuccess {
		t.Fatalf("mount: %s", res.Message)
	}
	for _, l := range []struct{ name, to string }{{"pod-link-root", "/"}, {"pod-link-outside", outside}} {
		must(t, os.Symlink(l.to, filepath.Join(f.dir, l.name)))
	}
	return f
}

func (f *flexDoor) podDir(t *testing.T, name string) string {
	p := filepath.Join(f.dir, "kubelet", "pods", name, "volumes", "volplug~local", "vol")
	must(t, os.MkdirAll(p, 0o750))
	return p
}

func (f *flexDoor) teardown(t *testing.T) {
	if res := f.run(t, "unmount", f.pod); res.Status != flex.StatusSuccess {
		t.Errorf("unmount: %s", res.Message)
	}
	if res := f.run(t, "delete", "good", f.opts(nil)); res.Status != flex.StatusSuccess {
		// the volume is named, not known by ID: find it by name
		t.Logf("delete by name: %s", res.Message)
	}
}

// opts builds the JSON argument as kubelet does.
func (f *flexDoor) opts(user map[string]string) string {
	m := map[string]string{flex.KeyFsType: "ext4", flex.KeyReadWrite: "rw", flex.KeyPVOrVolumeName: "pv-good",
		flex.KeyPodNamespace: "ns"}
	for k, v := range user {
		m[k] = v
	}
	data, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// run calls the driver as kubelet does: stdout and stderr together must be
// exactly one JSON object, and the exit code must fit the status.
func (f *flexDoor) run(t *testing.T, args ...string) *flex.Result {
	t.Helper()
	out, err := exec.Command(f.exe, args...).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	res, derr := flex.DecodeResult(out)
	if derr != nil {
		t.Fatalf("%q: output is not one JSON object: %v: %q", args, derr, out)
	}
	if (err != nil) != (res.Status == flex.StatusFailure) {
		t.Errorf("%q: status %s with exit %v", args, res.Status, err)
	}
	return res
}

func (f *flexDoor) cases() []flexCase {
	var out []flexCase
	add := func(call, input, code string, args ...string) {
		out = append(out, flexCase{call: call, input: input, args: append([]string{call}, args...), wantCode: code})
	}
	const inv = "INVALID_ARGUMENT"
	for _, v := range hostileIDs(f.outside) {
		if strings.Contains(v.v, "\x00") {
			continue // argv cannot carry a NUL: no kubelet can send one
		}
		id := map[string]string{"volumeID": v.v}
		add("attach", "volumeID: "+v.label, inv, f.opts(id), node)
		add("isattached", "volumeID: "+v.label, inv, f.opts(id), node)
		add("waitforattach", "device: "+v.label, inv, v.v, f.opts(nil))
		add("mountdevice", "device: "+v.label, inv, filepath.Join(f.dir, "gmount"), v.v, f.opts(nil))
		add("mount", "volumeID: "+v.label, inv, f.podDir0("p-id"), f.opts(id))
		add("expandvolume", "volumeID: "+v.label, inv, f.opts(id), "", "67108864", "33554432")
		add("expandfs", "volumeID: "+v.label, inv, f.opts(id), "", "", "67108864", "33554432")
		add("delete", "volume ID: "+v.label, inv, v.v, f.opts(nil))
		if len(v.v) > 128 || strings.ContainsAny(v.v, "\x00\n") {
			add("mount", "image: "+v.label, inv, f.podDir0("p-img"), f.opts(map[string]string{"image": v.v, "size": "16Mi"}))
			add("provision", "name: "+v.label, inv, f.opts(map[string]string{flex.KeyPVOrVolumeName: v.v, "kubernetes.io/requiredBytes": "16777216"}))
		}
	}
	for _, p := range append(hostilePaths(f.dir),
		value{"symlink to /", filepath.Join(f.dir, "pod-link-root")},
		value{"symlink to outside dir", filepath.Join(f.dir, "pod-link-outside")},
		value{"/ itself", "/"}) {
		if strings.Contains(p.v, "\x00") {
			continue
		}
		add("mount", "pod dir: "+p.label, inv, p.v, f.opts(map[string]string{"image": "good"}))
		add("unmount", "pod dir: "+p.label, "", p.v)
		add("mountdevice", "device mount path: "+p.label, inv, p.v, "", f.opts(map[string]string{"image": "good"}))
		add("unmountdevice", "device mount path: "+p.label, "", p.v)
	}
	pod := f.podDir0("p-opts")
	for _, o := range []struct {
		label string
		opts  string
	}{
		{"size -1", f.opts(map[string]string{"image": "sized", "size": "-1"})},
		{"size 1e400", f.opts(map[string]string{"image": "sized", "size": "1e400"})},
		{"size 9Ei (over int64)", f.opts(map[string]string{"image": "sized", "size": "9Ei"})},
		{"size 8Ei (over the pool)", f.opts(map[string]string{"image": "sized", "size": "8Ei"})},
		{"size 'Gi'", f.opts(map[string]string{"image": "sized", "size": "Gi"})},
		{"size with ;", f.opts(map[string]string{"image": "sized", "size": "1Gi;id"})},
		{"fsType with ;", f.opts(map[string]string{"image": "sized", "fsType": "ext4;touch " + f.outside + "/pwn"})},
		{"fsType ../", f.opts(map[string]string{"image": "sized", "fsType": "../../bin/sh"})},
		{"unknown option", f.opts(map[string]string{"image": "sized", "evil": "$(id)"})},
		{"readwrite 'rwx'", f.opts(map[string]string{"image": "good", flex.KeyReadWrite: "rwx"})},
		{"fsGroup -1", f.opts(map[string]string{"image": "good", flex.KeyFsGroup: "-1"})},
		{"secret not base64", f.opts(map[string]string{"image": "good", flex.SecretPrefix + "k": "%%%"})},
		{"JSON with a number", `{"image":1}`},
		{"JSON null", `null`},
		{"JSON array", `["x"]`},
		{"JSON trailing data", f.opts(map[string]string{"image": "good"}) + `{}`},
		{"JSON 10 MB", `{"image":"` + strings.Repeat("a", 10<<20) + `"}`},
		{"JSON nested 100000 deep", strings.Repeat(`{"a":`, 100000) + `""` + strings.Repeat(`}`, 100000)},
		{"invalid UTF-8", "{\"image\":\"\xff\xfe\"}"},
	} {
		if len(o.opts) > 100<<10 {
			// argv holds at most 128 KiB per string (MAX_ARG_STRLEN):
			// kubelet could not send it either; a file is what we can.
			continue
		}
		add("mount", "options: "+o.label, "", pod, o.opts)
		if full {
			add("attach", "options: "+o.label, "", o.opts, node)
			add("provision", "options: "+o.label, "", o.opts)
		}
	}
	for _, sz := range []value{{"-1", "-1"}, {"over int64", "99999999999999999999"}, {"not a number", "1;id"}, {"MaxInt64 (over the pool)", "9223372036854775807"}} {
		add("expandvolume", "new size "+sz.label, "", f.opts(map[string]string{"image": "good"}), "", sz.v, "33554432")
		if sz.label != "MaxInt64 (over the pool)" { // expandfs fills the disk, whatever the size says
			add("expandfs", "new size "+sz.label, "", f.opts(map[string]string{"image": "good"}), "", f.pod, sz.v, "33554432")
		}
	}
	add("init", "extra arguments", "", "../../x", "$(id)")
	out = append(out, flexCase{call: "no-such-call", input: "unknown call (kubelet: Not supported)", args: []string{"no-such-call", "$(id)"}, notSupported: true})
	return out
}

// podDir0 names a pod volume directory made before the cases run.
func (f *flexDoor) podDir0(name string) string {
	p := filepath.Join(f.dir, "kubelet", "pods", name, "volumes", "volplug~local", "vol")
	_ = os.MkdirAll(p, 0o750)
	return p
}

func mountTmpfs(path string) error { return unix.Mount("tmpfs", path, "tmpfs", 0, "size=1m") }

func unmountAll(path string) error { return mount.New().Unmount(path) }

// killMounter ends the mounter the s3 driver started for this test (found
// by its socket in its argv), after the driver's teardown unmounted all.
func killMounter(sock string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("mounter\x00--socket\x00"+sock)) {
			continue
		}
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
}
