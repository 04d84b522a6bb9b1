package crash

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/volplug/volplug/internal/testutil"
)

var all = flag.Bool("all", false, "run every crash case (make reliability); without it, a representative subset")

// crashCase arms one point (NAME, or NAME:N for its Nth hit) in one
// scenario. short cases run in `make test`.
type crashCase struct {
	arm, scenario string
	short         bool
}

var cases = []crashCase{
	{"local.create.dir-made", "image", false},
	{"local.create.image-made", "image", false},
	{"local.create.meta-written", "image", false},
	{"local.create.renamed", "image", false},
	{"local.meta.tmp-written", "image", true}, // the formatting mark, in the volume's own directory (a create writes its first metadata without a temp file)
	{"local.bgformat.attached", "image", false},
	{"local.format.marked", "image", false},
	{"local.format.formatted", "image", false},
	{"local.format.marked", "image-noformat", true},
	{"local.format.formatted", "image-noformat", false},
	{"local.stage.attached", "image-noformat", false},
	{"local.stage.dir-made", "image", false},
	{"local.stage.mounted", "image", false},
	{"local.publish.target-made", "image", false},
	{"local.freeze.one-frozen", "image", false},
	{"local.freeze.one-frozen:3", "image", true}, // the group: one member frozen, the other not yet
	{"local.snapshot.dirs-made", "image", false},
	{"local.copy.extent-done", "image", false},
	{"local.snapshot.member-copied", "image", false},
	{"local.snapshot.member-copied:2", "image", false}, // the group: one member copied, both frozen
	{"local.snapshot.copied", "image", false},
	{"local.snapshot.meta-written", "image", false},
	{"local.snapshot.renamed", "image", false},
	{"local.snapshot.renamed:2", "image", false}, // the group: one member in place, the other not
	{"local.group.members-made", "image", false},
	{"local.clone.frozen", "image", false},
	{"local.clone.frozen:2", "image", false}, // the live clone: its source frozen
	{"local.clone.copied", "image", false},
	{"local.clone.copied:2", "image", false},
	{"local.clone.grown", "image", false},
	{"local.stage.grown-offline", "image", false},
	{"local.expand.image-grown", "image", false},
	{"local.expand.meta-written", "image", false},
	{"local.expand.fs-grown", "image", false},
	{"local.modify.meta-written", "image", false},
	{"local.unpublish.unmounted", "image", false},
	{"local.unstage.unmounted", "image", false},
	{"local.group.file-removed", "image", false},
	{"local.removedir.trashed", "image", false},
	{"local.delete.trashed", "image", false},
	{"local.trash.removing", "image", false},
	{"local.native.subvol-made", "native", false},
	{"local.native.staging-made", "native", true},
	{"local.expand.native-limited", "native", false},
	{"local.native.unstage-unmounted", "native", false},
	{"local.remove.subvol-deleted", "native", false},
	{"s3.create.bucket-made", "s3", false},
	{"s3.stage.dir-made", "s3", false},
	{"s3.stage.mounter-running", "s3", false},
	{"s3.publish.target-made", "s3", false},
	{"s3.unpublish.unmounted", "s3", false},
	{"s3.unstage.checked", "s3", false},
	{"s3.delete.objects-removed", "s3", false},
	{"s3.delete.mark-removed", "s3", true},
	{"mounter.mount.dir-made", "s3", false},
	{"mounter.mount.mounted", "s3", true},
	{"mounter.unmount.unmounted", "s3", false},
}

// TestCrashPoints kills the driver at each case's point and checks the
// retry, agreement, data and leftovers (see harness.go).
func TestCrashPoints(t *testing.T) {
	for _, c := range cases {
		if !*all && !c.short {
			continue
		}
		t.Run(c.scenario+"/"+c.arm, func(t *testing.T) {
			scenarios[c.scenario](t, c.arm)
		})
	}
}

// Every scenario passes with nothing armed: what the cases find is the
// crash, not the scenario. (Only with -all: the short cases run the same
// scenarios.)
func TestScenariosWithoutCrash(t *testing.T) {
	if !*all {
		t.Skip("runs with -all (make reliability)")
	}
	for name, run := range scenarios {
		t.Run(name, func(t *testing.T) { run(t, "") })
	}
}

var hitCall = regexp.MustCompile(`failpoint\.Hit\("([^"]+)"\)`)

// Every failpoint in the source has a case, and every case names a point
// that exists: none is skipped silently, none tests nothing.
func TestEveryFailpointHasACase(t *testing.T) {
	root := testutil.ModuleRoot(t)
	inSource := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bin" || d.Name() == ".git") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") ||
			strings.Contains(path, filepath.Join("internal", "failpoint")) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range hitCall.FindAllStringSubmatch(string(data), -1) {
			if prev, ok := inSource[m[1]]; ok {
				t.Errorf("failpoint %s is in %s and %s: each name marks one step", m[1], prev, path)
			}
			inSource[m[1]] = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	covered := map[string]bool{}
	for _, c := range cases {
		name, _, _ := strings.Cut(c.arm, ":")
		if _, ok := inSource[name]; !ok {
			t.Errorf("case %s arms a point the source does not have", c.arm)
		}
		if _, ok := scenarios[c.scenario]; !ok {
			t.Errorf("case %s: no scenario %q", c.arm, c.scenario)
		}
		covered[name] = true
	}
	for name, path := range inSource {
		if !covered[name] {
			t.Errorf("failpoint %s (%s) has no crash case", name, path)
		}
	}
	t.Logf("%d failpoints in the source, %d crash cases", len(inSource), len(cases))
}

// waitGone waits up to 10 s for the processes with s in their argv to end.
func waitGone(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(processesNaming(s)) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("processes still running: %v", processesNaming(s))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkNoFiles fails for every file left under dir (directories may stay).
func checkNoFiles(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("left behind: %s", path)
		}
		return nil
	})
}
