package csi

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzCheckPath: whatever a CO sends, an accepted path is absolute, clean
// and has no "..": it can only name what it says.
func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pv/mount", "relative", "/a/../b", "/a/./b//c/", "", "/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := checkPath("path", p)
		if err != nil {
			return
		}
		if !filepath.IsAbs(got) || filepath.Clean(got) != got || slices.Contains(strings.Split(got, "/"), "..") || strings.ContainsRune(got, 0) {
			t.Fatalf("checkPath(%q) accepted %q", p, got)
		}
	})
}

// FuzzParseEndpoint never panics, and what it accepts is a unix path or a
// host:port.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"unix:///csi/csi.sock", "/csi.sock", "tcp://127.0.0.1:10000", "unix://", "http://x", "%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, e string) {
		network, addr, err := ParseEndpoint(e)
		if err != nil {
			return
		}
		if (network != "unix" && network != "tcp") || addr == "" {
			t.Fatalf("ParseEndpoint(%q) = %q %q", e, network, addr)
		}
	})
}

// FuzzPaginate: any token is either refused or yields a page of the list,
// in order, without repeats.
func FuzzPaginate(f *testing.F) {
	f.Add("", 2)
	f.Add("next:c", 1)
	f.Add("garbage", 0)
	all := []string{"a", "b", "c", "d"}
	f.Fuzz(func(t *testing.T, token string, max int) {
		if max < 0 {
			max = -max
		}
		page, next, err := paginate(all, func(s string) string { return s }, token, max)
		if err != nil {
			return
		}
		if max > 0 && len(page) > max {
			t.Fatalf("page of %d for max %d", len(page), max)
		}
		if !slices.IsSorted(page) || len(slices.Compact(slices.Clone(page))) != len(page) {
			t.Fatalf("page %v", page)
		}
		if next != "" && !strings.HasPrefix(next, tokenPrefix) {
			t.Fatalf("next token %q", next)
		}
	})
}
