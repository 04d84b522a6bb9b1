package flexdriver

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volplug/volplug/pkg/flex"
)

// These tests need no root: they never get as far as a mount.

func TestInit(t *testing.T) {
	for _, attach := range []bool{false, true} {
		e := newEnv(t, attach)
		res := e.run(flex.StatusSuccess, "init")
		c := res.Capabilities
		if c == nil || c.Attach != attach || !c.FSGroup || !c.SELinuxRelabel || !c.SupportsMetrics {
			t.Errorf("attach=%v: capabilities %+v", attach, c)
		}
	}
	// `volplug flex init` is the same driver.
	e := newEnv(t, false)
	e.bin = volplugBin()
	e.run(flex.StatusSuccess, "flex", "init")
	e.run(flex.StatusNotSupported, "flex", "--help")
}

func TestBadCalls(t *testing.T) {
	e := newEnv(t, false)
	for _, c := range []struct {
		want flex.Status
		args []string
	}{
		{flex.StatusFailure, nil},
		{flex.StatusNotSupported, []string{"bogus"}},
		{flex.StatusNotSupported, []string{"bogus", "a", "b"}},
		{flex.StatusNotSupported, []string{flex.CallGetVolumeName, "{}"}},
		{flex.StatusFailure, []string{flex.CallMount}},
		{flex.StatusFailure, []string{flex.CallMount, "/x"}},
		{flex.StatusFailure, []string{flex.CallMount, "/x", "{}", "extra"}},
		{flex.StatusFailure, []string{flex.CallMount, "/x", "{bad"}},
		{flex.StatusFailure, []string{flex.CallMount, "/x", `{"a":1}`}},
		{flex.StatusFailure, []string{flex.CallMount, "/x", "{}"}}, // names no volume
		{flex.StatusFailure, []string{flex.CallAttach, `{"kubernetes.io/secret/k":"%%%"}`, "node1"}},
		{flex.StatusFailure, []string{flex.CallAttach, options("v", map[string]string{"size": "lots"}), "node1"}},
		{flex.StatusFailure, []string{flex.CallUnmount}},
		{flex.StatusFailure, []string{flex.CallDetach, "v"}},
		{flex.StatusFailure, []string{flex.CallMountDevice, "/x", "", "{}"}},
	} {
		e.run(c.want, c.args...)
	}
}

// TestOneObjectPerCall runs every call with right, missing and bad
// arguments; run fails the test unless each answer is exactly one JSON
// object with an exit code that fits it.
func TestOneObjectPerCall(t *testing.T) {
	e := newEnv(t, true)
	arg := map[string]string{
		"json": options("pv-none", nil), "nodeName": "node1", "volumeName": "pv-none",
		"device": "vol-none", "deviceMountPath": filepath.Join(e.dir, "global"),
		"podVolumeDir": filepath.Join(e.dir, "pod"), "devicePath": "vol-none",
		"newBytes": "2000000", "oldBytes": "1000000",
	}
	for call, names := range flex.Args {
		var args []string
		for _, n := range names {
			args = append(args, arg[n])
		}
		for _, a := range [][]string{args, args[:max(len(args)-1, 0)], append(args, "extra")} {
			res, err := runDriver(e.bin, append([]string{call}, a...)...)
			if err != nil {
				t.Errorf("%s %q: %v", call, a, err)
			} else {
				t.Logf("%s %d args: %s %s", call, len(a), res.Status, res.Message)
			}
		}
		for i, n := range names {
			if n != "json" {
				continue
			}
			bad := append([]string(nil), args...)
			bad[i] = `{"unterminated`
			if res, err := runDriver(e.bin, append([]string{call}, bad...)...); err != nil {
				t.Errorf("%s with bad JSON: %v", call, err)
			} else if res.Status != flex.StatusFailure {
				t.Errorf("%s with bad JSON: %s", call, res.Status)
			}
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"pool": "/p", "typo": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing.json")} {
		t.Setenv(ConfigEnv, path)
		res, err := runDriver(driverBin(), "init")
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != flex.StatusFailure {
			t.Errorf("config %s: %s", path, res.Status)
		}
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ { // a second install replaces the first
		out, err := runInstall(dir)
		if err != nil {
			t.Fatalf("install: %v: %s", err, out)
		}
	}
	installed := filepath.Join(dir, "volplug~local", "local")
	st, err := os.Stat(installed)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", st.Mode().Perm())
	}
	want, _ := os.ReadFile(volplugBin())
	got, _ := os.ReadFile(installed)
	if !bytes.Equal(want, got) {
		t.Error("installed file differs from the binary")
	}
	entries, _ := os.ReadDir(filepath.Dir(installed))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	e := newEnv(t, false)
	e.bin = installed
	e.run(flex.StatusSuccess, "init")
}

// The installer writes the driver's volplug.json from its flags, as the
// DaemonSet passes them, and the installed driver uses it; an install
// without them leaves the file alone.
func TestInstallWritesConfig(t *testing.T) {
	dir := t.TempDir()
	pool, logFile := filepath.Join(dir, "disk", "pool"), filepath.Join(dir, "log", "flex.log")
	out, err := exec.Command(volplugBin(), "flex", "install", "--plugin-dir", dir,
		"--pool", pool, "--log-file", logFile, "--node", "n1").CombinedOutput()
	if err != nil {
		t.Fatalf("install: %v: %s", err, out)
	}
	conf := filepath.Join(dir, "volplug~local", "volplug.json")
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil || cfg != (Config{Pool: pool, Node: "n1", LogFile: logFile}) {
		t.Fatalf("volplug.json = %s (%v)", data, err)
	}
	t.Setenv(ConfigEnv, "")
	os.Unsetenv(ConfigEnv) // the installed driver finds volplug.json beside itself
	driver := filepath.Join(dir, "volplug~local", "local")
	if res, err := runDriver(driver, "init"); err != nil || res.Status != flex.StatusSuccess {
		t.Fatalf("init: %v %v", res, err)
	}
	if _, err := os.Stat(logFile); err != nil {
		t.Errorf("the driver did not log where volplug.json says: %v", err)
	}

	if out, err := runInstall(dir); err != nil {
		t.Fatalf("install: %v: %s", err, out)
	}
	if again, _ := os.ReadFile(conf); !bytes.Equal(again, data) {
		t.Errorf("an install without settings changed volplug.json to %s", again)
	}
	out, err = exec.Command(volplugBin(), "flex", "install", "--plugin-dir", dir, "--pool", "relative/pool").CombinedOutput()
	if err == nil {
		t.Errorf("a relative pool path was accepted: %s", out)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"": 0, "0": 0, "4096": 4096, "1Ki": 1024, "64Mi": 64 << 20, "1Gi": 1 << 30,
		"1G": 1e9, "1.5Gi": 3 << 29, "0.5k": 500, "1.0001k": 1001, " 2M ": 2e6,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "0x10", "1/2", "Gi", "1 Gi", "1GB", "99999999Ei"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}
