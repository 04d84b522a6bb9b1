package bucketfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/volplug/volplug/internal/bucketfs"
)

// Small files are stored after their close, in the background: this
// mount sees them at once, unlink does not bring them back, and Unmount
// returns only when every one is in the store.
func TestBackgroundPuts(t *testing.T) {
	e := newEnv(t)
	mnt := filepath.Join(e.dir, "m")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := bucketfs.Mount(context.Background(), mnt, e.config())
	if err != nil {
		t.Fatal(err)
	}
	mounted := true
	defer func() {
		if mounted {
			s.Unmount()
		}
	}()
	const n = 300 // more than the PUTs in flight at once
	content := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("file %d\n", i)), i%50) }
	var want []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("f%03d", i)
		if err := os.WriteFile(filepath.Join(mnt, name), content(i), 0o644); err != nil {
			t.Fatal(err)
		}
		// Closed, maybe not stored yet: this mount reads it back at once.
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, content(i)) {
			t.Fatalf("%s read back at once: %q %v", name, got, err)
		}
		want = append(want, name)
	}
	// Stat and list at once after a close, without reading.
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("g%02d", i)
		if err := os.WriteFile(filepath.Join(mnt, name), content(i), 0o644); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(filepath.Join(mnt, name)); err != nil || fi.Size() != int64(len(content(i))) {
			t.Fatalf("%s stat at once: %v %v", name, fi, err)
		}
		want = append(want, name)
	}
	ents, err := os.ReadDir(mnt)
	if err != nil || len(ents) != len(want) {
		t.Fatalf("listing after the closes: %d entries (want %d), %v", len(ents), len(want), err)
	}
	// Removed right after its close: the PUT must not land after the
	// DELETE.
	for i := 0; i < 20; i++ {
		p := filepath.Join(mnt, fmt.Sprintf("gone%02d", i))
		if err := os.WriteFile(p, []byte("short-lived"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	// The last ones closed just now; Unmount waits for their PUTs.
	for i := 0; i < 50; i++ {
		name := fmt.Sprintf("h%02d", i)
		if err := os.WriteFile(filepath.Join(mnt, name), content(i), 0o644); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	mounted = false
	if err := s.Unmount(); err != nil {
		t.Fatal(err)
	}
	keys := e.keys(t)
	sort.Strings(keys)
	sort.Strings(want)
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Fatalf("after unmount the bucket has %d keys, want %d:\n%v", len(keys), len(want), keys)
	}
	for _, k := range want {
		var i int
		fmt.Sscanf(k[1:], "%d", &i)
		if got := e.stored(t, k); !bytes.Equal(got, content(i)) {
			t.Fatalf("%s stored: %q", k, got)
		}
	}
}

// A background PUT that fails is reported by the next fsync of the file
// (and logged); fsync after a close waits for the PUT.
func TestFsyncReportsBackgroundPutError(t *testing.T) {
	e := newEnv(t)
	// Every lookup after the keys stop working must be answered from the
	// cache, however slow the machine: a new name in d from mkdir's
	// listing of d, and d itself from the root's listing (the kernel may
	// drop its entry for d under memory pressure and ask again).
	cfg := e.config()
	cfg.CacheTTL = time.Hour
	s, mnt := e.mount(t, "m", cfg)
	if _, err := os.ReadDir(mnt); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(mnt, "d", "f")

	// fsync on another descriptor after the close: it waits for the
	// PUT, and the store has the file when it returns.
	f1, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f1.Write([]byte("stored")); err != nil {
		t.Fatal(err)
	}
	if err := f1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f2.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := e.stored(t, "d/f"); string(got) != "stored" {
		t.Fatalf("after fsync the store has %q", got)
	}
	f2.Close()

	// The keys stop working: the close succeeds (the PUT is queued),
	// the PUT fails, and fsync says so, once.
	ak, sk := e.s3.RotateKeys(t)
	g := filepath.Join(mnt, "d", "g") // its lookup is answered by mkdir's listing
	f1, err = os.Create(g)
	if err != nil {
		t.Fatal(err)
	}
	f2, err = os.OpenFile(g, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if _, err := f1.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	if err := f1.Close(); err != nil {
		t.Fatalf("close queues the PUT and succeeds: %v", err)
	}
	wantErrno(t, "fsync after a failed background PUT", f2.Sync(), syscall.EACCES)
	if err := f2.Sync(); err != nil {
		t.Errorf("the error is reported once; second fsync: %v", err)
	}
	if err := s.SetKeys(context.Background(), ak, sk); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.s3.Dir, bucket, "d", "g")); err == nil {
		t.Error("the failed file is in the store")
	}
}
