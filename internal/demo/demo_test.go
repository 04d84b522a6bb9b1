package demo

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volplug/volplug/internal/testutil"
)

var (
	buildOnce sync.Once
	binPath   string
)

// volplugBinary builds cmd/volplug once per test run: the demo re-executes
// its own binary as the driver, so it cannot run inside the test binary.
func volplugBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "volplug-demo-test-")
		if err != nil {
			t.Fatal(err)
		}
		binPath = testutil.BuildVolplug(t, dir)
	})
	if binPath == "" {
		t.Fatal("building cmd/volplug failed (see the first failing test)")
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// runDemo runs the built binary's demo with a private TMPDIR, so the
// nothing-left-behind check below looks at this run's files only.
func runDemo(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	bin := volplugBinary(t)
	tmp := t.TempDir()
	cmd := exec.Command(bin, append([]string{"demo"}, args...)...)
	cmd.Env = append(append(os.Environ(), "TMPDIR="+tmp), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("volplug demo %s:\n%s", strings.Join(args, " "), out.String())
		return out.String(), tmp, err
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("volplug demo hung; output so far:\n%s", out.String())
	}
	return "", "", nil
}

// assertNothingLeft checks the host itself, not the demo's word for it.
func assertNothingLeft(t *testing.T, tmp string) {
	t.Helper()
	left, err := leftovers(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("left behind under %s: %s", tmp, strings.Join(left, "; "))
	}
}

func TestDemo(t *testing.T) {
	testutil.RequireRoot(t)
	out, tmp, err := runDemo(t, nil)
	if err != nil {
		t.Fatalf("volplug demo: %v", err)
	}
	for _, want := range []string{
		"GetPluginInfo",
		`CreateVolume "demo-vol": 1.0Gi, ext4, SINGLE_NODE_WRITER`,
		"state: (none) -> CREATED",
		"state: CREATED -> NODE_READY",
		"state: NODE_READY -> VOL_READY",
		"state: VOL_READY -> PUBLISHED",
		"read it back: identical",
		"volume (statfs",
		"state: PUBLISHED -> VOL_READY",
		"state: VOL_READY -> NODE_READY",
		"state: NODE_READY -> CREATED",
		"state: CREATED -> (none)",
		"Stop the driver (SIGTERM)",
		"nothing left behind",
		"and back, in",
		"CreateSnapshot of the published volume",
		"hello.bin is there, after-snapshot.txt (written later) is not",
		"Expand the volume to twice its size",
		"size 1.9Gi",
		"DeleteSnapshot",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("narration lacks %q", want)
		}
	}
	// A real mount of the volume at the pod's path, seen in mountinfo.
	if !regexp.MustCompile(`pods/demo/volume \S+ - ext4 /dev/loop\d+`).MatchString(out) {
		t.Error("narration shows no ext4 loop mount at the pod's path")
	}
	if strings.Contains(out, "FAILED") {
		t.Error("a step failed")
	}
	assertNothingLeft(t, tmp)
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("work dir not removed: %v", entries)
	}
}

func TestDemoNoAttachKeep(t *testing.T) {
	testutil.RequireRoot(t)
	out, tmp, err := runDemo(t, nil, "--attach=false", "--keep", "--size", "64Mi")
	if err != nil {
		t.Fatalf("volplug demo: %v", err)
	}
	for _, want := range []string{"--enable-attach=false", "ControllerPublishVolume: skipped", "64.0Mi", "kept (--keep)"} {
		if !strings.Contains(out, want) {
			t.Errorf("narration lacks %q", want)
		}
	}
	assertNothingLeft(t, tmp)
	kept, _ := filepath.Glob(filepath.Join(tmp, "volplug-demo-*", "driver.log"))
	if len(kept) != 1 {
		t.Errorf("--keep did not keep the work dir with the driver log: %v", kept)
	}
}

// TestDemoFailureTearsDown breaks the walk in the middle, by putting an
// mkfs that always fails first on the driver's PATH, and checks that the
// demo still unwinds, reports the error and leaves nothing mounted.
func TestDemoFailureTearsDown(t *testing.T) {
	testutil.RequireRoot(t)
	fake := t.TempDir()
	script := "#!/bin/sh\necho 'mkfs broken on purpose by the test' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(fake, "mkfs.ext4"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out, tmp, err := runDemo(t, []string{"PATH=" + fake + ":" + os.Getenv("PATH")})
	if err == nil {
		if !strings.Contains(out, "broken on purpose") {
			t.Skip("the driver does not run mkfs.ext4 from PATH, so this way of breaking it does not work")
		}
		t.Fatal("demo succeeded although mkfs failed")
	}
	for _, want := range []string{
		"FAILED", "the walk failed", "cleanup: ControllerUnpublishVolume", "cleanup: DeleteVolume",
		"cleanup: Stop the driver", "driver log:", "broken on purpose",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("narration lacks %q", want)
		}
	}
	assertNothingLeft(t, tmp)
}

func TestDemoAdapt(t *testing.T) {
	testutil.RequireRoot(t)
	out, tmp, err := runDemo(t, nil, "adapt")
	if err != nil {
		t.Fatalf("volplug demo adapt: %v", err)
	}
	for _, want := range []string{
		"Start volplug adapt on it",
		`the pod reads`, `"served by a FlexVolume script"`,
		`"kubernetes.io/pod.name"`, `"kubernetes.io/secret/token"`,
		"target removed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("narration lacks %q", want)
		}
	}
	if strings.Contains(out, "not-in-any-log") {
		t.Error("a secret's value was printed")
	}
	assertNothingLeft(t, tmp)
}
