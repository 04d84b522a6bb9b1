//go:build failpoints

package failpoint

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	got := parse(" a, b:3 ,c:x,,")
	if len(got) != 3 || got["a"] != 1 || got["b"] != 3 || got["c"] != 1 {
		t.Fatalf("parse: %v", got)
	}
}

// An armed point kills its process with SIGKILL at the asked hit and not
// before; an unarmed one does nothing.
func TestHitKills(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Hit("other")
		Hit("here")
		os.Stdout.WriteString("first hit passed\n")
		Hit("here")
		os.Stdout.WriteString("second hit passed\n")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHitKills$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Env+"=here:2")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL\n%s", err, out)
	}
	if !strings.Contains(string(out), "first hit passed") || strings.Contains(string(out), "second hit passed") ||
		!strings.Contains(string(out), "failpoint here: SIGKILL") {
		t.Fatalf("child output:\n%s", out)
	}
}
