package demo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadMounts(t *testing.T) {
	fixture := filepath.Join(t.TempDir(), "mountinfo")
	content := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
42 27 7:0 / /tmp/d/staging rw,relatime - ext4 /dev/loop0 rw
43 27 7:0 / /tmp/d/pods/my\040pod/volume rw,relatime shared:5 master:1 - ext4 /dev/loop0 rw
44 27 0:5 / /tmp/dx rw - tmpfs tmpfs rw
garbage line
`
	if err := os.WriteFile(fixture, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	old := mountinfoPath
	mountinfoPath = fixture
	t.Cleanup(func() { mountinfoPath = old })

	all, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 {
		t.Fatalf("got %d mounts, want 4: %+v", len(all), all)
	}
	got, err := mountsUnder("/tmp/d")
	if err != nil {
		t.Fatal(err)
	}
	// /tmp/dx shares the prefix but is not under /tmp/d.
	if len(got) != 2 || got[0].MountPoint != "/tmp/d/staging" || got[1].MountPoint != "/tmp/d/pods/my pod/volume" {
		t.Fatalf("mountsUnder = %+v", got)
	}
	if got[1].FsType != "ext4" || got[1].Source != "/dev/loop0" || got[1].Options != "rw,relatime" {
		t.Errorf("fields after optional ones misread: %+v", got[1])
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`: "/a b", `/a\011b`: "/a\tb", `/a\134b`: `/a\b`, `/plain`: "/plain",
		`/short\04`: `/short\04`, `/bad\999`: `/bad\999`, `\`: `\`,
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoopsUnder(t *testing.T) {
	root := t.TempDir()
	write := func(dev, backing string) {
		dir := filepath.Join(root, dev, "loop")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "backing_file"), []byte(backing+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("loop0", "/tmp/d/pool/vol-1.img")
	write("loop1", "/tmp/d/pool/vol-2.img (deleted)")
	write("loop2", "/var/other.img")
	write("loop3", "/tmp/dx/x.img")
	old := sysBlock
	sysBlock = root
	t.Cleanup(func() { sysBlock = old })

	got, err := loopsUnder("/tmp/d")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Device != "/dev/loop0" || got[1].Device != "/dev/loop1" ||
		got[1].BackingFile != "/tmp/d/pool/vol-2.img (deleted)" {
		t.Fatalf("loopsUnder = %+v", got)
	}
}

func TestPreflight(t *testing.T) {
	oldLook, oldUID := lookPath, geteuid
	t.Cleanup(func() { lookPath, geteuid = oldLook, oldUID })
	have := map[string]bool{"blkid": true, "mount": true, "umount": true, "mkfs.ext4": true}
	lookPath = func(name string) (string, error) {
		if have[name] {
			return "/usr/sbin/" + name, nil
		}
		return "", exec.ErrNotFound
	}
	tests := []struct {
		name    string
		uid     int
		fs      string
		wantErr string
	}{
		{"root with tools", 0, "ext4", ""},
		{"not root", 1000, "ext4", "needs root"},
		{"missing xfs tools", 0, "xfs", "apt-get install xfsprogs"},
		{"missing btrfs tools", 0, "btrfs", "missing mkfs.btrfs"},
		{"unknown fs", 0, "zfs", "want ext4, xfs or btrfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			geteuid = func() int { return tt.uid }
			err := preflight(tt.fs)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("preflight: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("preflight error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestUnwindAfterFailure checks the way back: every step runs, last
// pushed first, even when one fails, and the failures are all reported.
func TestUnwindAfterFailure(t *testing.T) {
	var out bytes.Buffer
	d := &demo{n: &narrator{w: &out}}
	var ran []string
	step := func(name string, err error) {
		d.push(name, "", func(context.Context) error {
			ran = append(ran, name)
			return err
		})
	}
	step("stop driver", nil)
	step("delete", errors.New("delete broke"))
	step("unstage", errors.New("unstage broke"))
	step("unpublish", nil)

	err := d.unwind(context.Background(), true)
	if want := "unpublish unstage delete stop driver"; strings.Join(ran, " ") != want {
		t.Errorf("ran %q, want %q", strings.Join(ran, " "), want)
	}
	if err == nil || !strings.Contains(err.Error(), "delete broke") || !strings.Contains(err.Error(), "unstage broke") {
		t.Errorf("unwind error = %v, want both failures", err)
	}
	if !strings.Contains(out.String(), "cleanup: unstage") || !strings.Contains(out.String(), "FAILED") {
		t.Errorf("narration:\n%s", out.String())
	}
	if len(d.undo) != 0 {
		t.Error("undo stack not emptied")
	}
}

func TestWrap(t *testing.T) {
	lines := wrap("one two three four five six", 9)
	want := []string{"one two", "three", "four five", "six"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("wrap = %q, want %q", lines, want)
	}
}
