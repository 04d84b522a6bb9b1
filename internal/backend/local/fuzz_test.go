package local

import (
	"path/filepath"
	"testing"
)

// FuzzCheckID: an accepted ID, joined to the pool, names exactly one entry
// of <pool>/volumes: never the directory itself, its parent, or below.
func FuzzCheckID(f *testing.F) {
	for _, s := range []string{"vol-0123", "..", "../x", "a/b", ".hidden", "a\x00b", "%2e%2e"} {
		f.Add(s)
	}
	p := &pool{dir: "/pool"}
	f.Fuzz(func(t *testing.T, id string) {
		if checkID(id) != nil {
			return
		}
		dir := p.volumeDir(id)
		if filepath.Dir(dir) != "/pool/volumes" || filepath.Base(dir) != id || id == "." || id == ".." {
			t.Fatalf("ID %q names %q", id, dir)
		}
	})
}

// FuzzChooseSize: any sizes give an error or a positive size that is at
// least the required one (and the floor), within the limit, in whole
// 512-byte sectors; no overflow.
func FuzzChooseSize(f *testing.F) {
	f.Add(int64(0), int64(0), int64(MiB))
	f.Add(int64(1<<62), int64(0), int64(0))
	f.Add(int64(-1), int64(5), int64(0))
	f.Add(int64(9223372036854775807), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, required, limit, floor int64) {
		if floor < 0 || floor > 1<<40 {
			return
		}
		size, err := chooseSize(required, limit, floor)
		if err != nil {
			return
		}
		if size <= 0 || size%512 != 0 || size < required || size < floor || (limit > 0 && size > limit) {
			t.Fatalf("chooseSize(%d, %d, %d) = %d", required, limit, floor, size)
		}
	})
}
