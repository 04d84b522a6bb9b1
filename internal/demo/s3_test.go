package demo

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/testutil"
)

// assertNoProcess checks that no process of the run is left: every one the
// demo starts (driver, mounter, s3fs, versitygw) names a path under tmp.
func assertNoProcess(t *testing.T, tmp string) {
	t.Helper()
	for _, pid := range processesNaming(tmp) {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		t.Errorf("process %d left running: %q", pid, cmdline)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func TestDemoS3(t *testing.T) {
	testutil.RequireRoot(t)
	out, tmp, err := runDemo(t, nil, "--backend=s3", "--versitygw", testutil.VersitygwPath(t))
	if err != nil {
		t.Fatalf("volplug demo --backend=s3: %v", err)
	}
	for _, want := range []string{
		"Start an S3 server: versitygw on 127.0.0.1",
		"values not shown",
		"driver s3.csi.volplug.io",
		"MULTI_NODE_MULTI_WRITER, mounter builtin",
		"the mark, .volplug/volume.json: {",
		`"bucketCreated":true`,
		"type fuse.bucketfs",
		"staging: size 1.0Gi",
		"parent 1, session",
		"not its parent",
		"object hello.txt in bucket pvc-demo-",
		`pod-b reads hello.txt: "hello from pod-a"`,
		"read-only file system",
		"df before: size 1.0Gi",
		"df after: size 2.0Gi",
		"killed with SIGKILL",
		"with no driver running, pod-a reads hello.txt and writes during-the-crash.txt; pod-b sees it",
		"NodeGetVolumeStats says total 2.0Gi",
		"holds .volplug/volume.json, during-the-crash.txt, hello.txt",
		"is gone from the storage",
		"Stop the mounter the driver started",
		"exited",
		"no process of this run is left",
		"nothing left behind",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("narration lacks %q", want)
		}
	}
	if strings.Contains(out, "FAILED") {
		t.Error("a step failed")
	}
	assertNothingLeft(t, tmp)
	assertNoProcess(t, tmp)
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("work dir not removed: %v", entries)
	}
}

// TestDemoS3EndpointS3FS runs the demo against a server of the test's,
// with the keys in the environment, through s3fs, and checks that the keys
// reach neither the narration nor any log.
func TestDemoS3EndpointS3FS(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("s3fs"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("s3fs missing (CI=true); make deps installs it")
		}
		t.Skip("s3fs missing")
	}
	s3 := testutil.StartS3Server(t)
	env := []string{envAccessKey + "=" + s3.AccessKey, envSecretKey + "=" + s3.SecretKey}
	out, tmp, err := runDemo(t, env, "--backend=s3", "--s3-endpoint="+s3.Endpoint, "--mounter=s3fs", "--size=64Mi", "--keep")
	if err != nil {
		t.Fatalf("volplug demo --backend=s3 --s3-endpoint: %v", err)
	}
	for _, want := range []string{"Object storage: " + s3.Endpoint, "type fuse ", "s3fs reports its own figures", "kept (--keep)"} {
		if !strings.Contains(out, want) {
			t.Errorf("narration lacks %q", want)
		}
	}
	if strings.Contains(out, "Start an S3 server") || strings.Contains(out, "FAILED") {
		t.Error("the demo started its own server, or a step failed")
	}
	assertNothingLeft(t, tmp)
	assertNoProcess(t, tmp)
	logs, _ := filepath.Glob(filepath.Join(tmp, "volplug-demo-s3-*", "*.log"))
	if len(logs) < 3 {
		t.Errorf("--keep kept logs %v, want the driver's (twice) and the mounter's", logs)
	}
	texts := [][]byte{[]byte(out)}
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		texts = append(texts, b)
	}
	for i, b := range texts {
		if bytes.Contains(b, []byte(s3.SecretKey)) || bytes.Contains(b, []byte(s3.AccessKey)) {
			t.Errorf("a key reached the output or a log (%d)", i)
		}
	}
	if entries, _ := os.ReadDir(s3.Dir); len(entries) > 0 {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "pvc-demo-") {
				t.Errorf("bucket %s outlived the demo", e.Name())
			}
		}
	}
}

// TestDemoS3Interrupted sends the demo SIGINT (a Ctrl-C) in the middle of
// the walk: it must tear down through the driver, stop the mounter and the
// server, and leave nothing.
func TestDemoS3Interrupted(t *testing.T) {
	testutil.RequireRoot(t)
	bin := volplugBinary(t)
	tmp := t.TempDir()
	cmd := exec.Command(bin, "demo", "--backend=s3", "--versitygw", testutil.VersitygwPath(t))
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	var out strings.Builder
	sent := false
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		// Interrupt as pod-a's publish begins: the bucket is staged then.
		if !sent && strings.Contains(sc.Text(), "NodePublishVolume for pod-a") {
			sent = true
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
		}
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("the interrupted demo hung:\n%s", out.String())
	}
	t.Logf("output:\n%s", out.String())
	if !sent {
		t.Fatal("the walk never reached pod-a's publish")
	}
	if err == nil {
		t.Fatal("the interrupted demo exited 0")
	}
	for _, want := range []string{
		"the walk failed", "cleanup: NodeUnstageVolume", "cleanup: DeleteVolume", "is gone from the storage",
		"cleanup: Stop the driver", "cleanup: Stop the mounter", "cleanup: Stop the S3 server", "no process of this run is left",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("narration lacks %q", want)
		}
	}
	assertNothingLeft(t, tmp)
	assertNoProcess(t, tmp)
}

func TestBackendFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--backend=s3", "--fs-type=xfs"}, "--fs-type has no meaning with --backend=s3"},
		{[]string{"--mounter=s3fs"}, "--mounter has no meaning with --backend=local"},
		{[]string{"--backend=nfs"}, `--backend "nfs": want local or s3`},
	} {
		cmd := NewCommand()
		cmd.SetArgs(tc.args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestProcLineage(t *testing.T) {
	ppid, sid, err := procLineage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ppid != os.Getppid() {
		t.Errorf("parent %d, want %d", ppid, os.Getppid())
	}
	if want, _ := unix.Getsid(0); sid != want {
		t.Errorf("session %d, want %d", sid, want)
	}
}
