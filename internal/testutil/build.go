package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ModuleRoot finds the directory of go.mod above the test's directory.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// BuildVolplug builds the real binary into dir and returns its path, so a
// test drives volplug as it ships rather than through the test binary.
func BuildVolplug(tb testing.TB, dir string) string {
	tb.Helper()
	out := filepath.Join(dir, "volplug")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/volplug")
	cmd.Dir = ModuleRoot(tb)
	if msg, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build ./cmd/volplug: %v\n%s", err, msg)
	}
	return out
}
