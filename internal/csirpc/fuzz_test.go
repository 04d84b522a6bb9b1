package csirpc

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzCheckMountFlags: an accepted flag list never grants on a read-only
// request, never changes what is mounted, never names a host device.
func FuzzCheckMountFlags(f *testing.F) {
	for _, s := range []string{"ro", "noatime,nosuid", "rw", "bind", "logdev=/dev/sda", `context="a:b:c,d"`, "subvol=/a/b", "data=ordered", "nosuid,rw", ""} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, flag string, readOnly bool) {
		if CheckMountFlags([]string{flag}, readOnly) != nil {
			return
		}
		for _, opt := range splitOptions(flag) {
			key, value, _ := strings.Cut(opt, "=")
			if readOnly && grants[opt] {
				t.Fatalf("read-only request accepted %q in %q", opt, flag)
			}
			if slices.Contains([]string{"bind", "rbind", "remount", "move", "loop", "user", "users", "owner", "logdev", "rtdev", "journal_path", "journal_dev"}, key) {
				t.Fatalf("accepted %q in %q", opt, flag)
			}
			if strings.HasPrefix(value, "/dev") || strings.ContainsAny(opt, "\x00\n") {
				t.Fatalf("accepted %q in %q", opt, flag)
			}
		}
	})
}

// FuzzCheckNodePath: an accepted path is absolute, clean, below "/",
// within PATH_MAX and NAME_MAX, without control characters or "..".
func FuzzCheckNodePath(f *testing.F) {
	for _, s := range []string{"/var/lib/kubelet/pods/x/mount", "/", "/a/../b", "rel", "/a\nb", "/" + strings.Repeat("a", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := CheckPath("path", p)
		if err != nil {
			return
		}
		if !filepath.IsAbs(got) || filepath.Clean(got) != got || got == "/" || hasControl(got) || len(got) >= MaxPathLen ||
			slices.Contains(strings.Split(got, "/"), "..") {
			t.Fatalf("CheckPath(%q) accepted %q", p, got)
		}
		for _, name := range strings.Split(got, "/") {
			if len(name) > MaxComponentLen {
				t.Fatalf("CheckPath(%q): name of %d bytes", p, len(name))
			}
		}
	})
}

// FuzzCheckName: accepted names and IDs fit the spec's 128 bytes and hold
// no control characters.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"pvc-1", "", "a\x00b", strings.Repeat("x", 129), "../../etc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, err := range []error{CheckName("volume", s), CheckID(s)} {
			if err == nil && (s == "" || len(s) > MaxNameLen || hasControl(s)) {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}
