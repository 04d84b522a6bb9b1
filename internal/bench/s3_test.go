package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/volplug/volplug/internal/mounter"
	"github.com/volplug/volplug/internal/testutil"
)

// bench s3 end to end at a small size: every row (the three mounters, the
// client, the floor) measures something, the client sweep reports every
// setting, and the mounts are gone at the end.
func TestRunS3Small(t *testing.T) {
	testutil.RequireRoot(t)
	var progress bytes.Buffer
	dir := t.TempDir()
	rows, err := RunS3(context.Background(), S3Config{Versitygw: testutil.VersitygwPath(t), Dir: dir,
		FileMiB: 8, Files: 20, Runs: 1, ClientSweep: true}, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	kinds := map[string]bool{}
	for _, r := range rows {
		kinds[r.Kind] = true
		if r.WriteMBs <= 0 || r.ReadMBs <= 0 || r.CreatesPerS <= 0 || r.ListMs <= 0 {
			t.Errorf("row %+v", r)
		}
	}
	for _, want := range []string{mounter.Builtin, builtinFourParts, mounter.S3FS, mounter.Rclone, Client, "floor"} {
		if !kinds[want] {
			t.Errorf("no row %q in %v", want, kinds)
		}
	}
	if n := strings.Count(progress.String(), "client sweep run 1: write"); n != 8 {
		t.Errorf("%d write settings swept, want 8:\n%s", n, progress.String())
	}
	if n := strings.Count(progress.String(), "client sweep run 1: creates"); n != 4 {
		t.Errorf("%d create settings swept, want 4:\n%s", n, progress.String())
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), dir) {
		t.Errorf("left mounted under %s:\n%s", dir, mi)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) > 0 {
		t.Errorf("left %v (%v)", left, err)
	}
}
