package bucketfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDirectoriesRenameUnlink(t *testing.T) {
	e := newEnv(t)
	_, mnt := e.mount(t, "m", e.config())
	p := func(s string) string { return filepath.Join(mnt, s) }

	if err := os.Mkdir(p("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("d/f"), []byte("in d"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "rmdir of a non-empty directory", unix.Rmdir(p("d")), syscall.ENOTEMPTY)
	wantErrno(t, "mkdir over a directory", os.Mkdir(p("d"), 0o755), syscall.EEXIST)

	// Files and directories rename, with their content.
	if err := os.Rename(p("d/f"), p("d/g")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p("d"), p("e")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p("e/g")); err != nil || string(got) != "in d" {
		t.Fatalf("after renames: %q %v", got, err)
	}
	if string(e.stored(t, "e/g")) != "in d" {
		t.Fatal("renamed object not stored under e/g")
	}
	if _, err := os.Stat(p("d")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old directory still there: %v", err)
	}
	// Rename over an existing file replaces it.
	if err := os.WriteFile(p("e/h"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p("e/g"), p("e/h")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p("e/h")); string(got) != "in d" {
		t.Fatalf("rename over a file: %q", got)
	}
	if err := os.Remove(p("e/h")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Rmdir(p("e")); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(mnt)
	if err != nil || len(ents) != 0 {
		t.Fatalf("root after removing everything: %v %v", ents, err)
	}
	if left := e.keys(t); len(left) != 0 {
		t.Fatalf("objects left in the bucket: %v", left)
	}
}

func TestTruncateFsyncRandomWrite(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.StagingLimit = 4 << 20
	_, mnt := e.mount(t, "m", cfg)
	path := filepath.Join(mnt, "f")
	data := random(t, 3<<20)

	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	// fsync stores the file now, with the file still open.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.stored(t, "f"), data) {
		t.Fatal("not stored after fsync")
	}
	// A write in the middle (staged), then one past the end.
	copy(data[1000:], "patched")
	if _, err := f.WriteAt([]byte("patched"), 1000); err != nil {
		t.Fatal(err)
	}
	data = append(data, "tail"...)
	if _, err := f.WriteAt([]byte("tail"), 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.stored(t, "f"), data) {
		t.Fatal("random writes not stored at close")
	}

	// truncate(2): shrink, grow (zeros), to zero.
	if err := os.Truncate(path, 10); err != nil {
		t.Fatal(err)
	}
	if got := e.stored(t, "f"); !bytes.Equal(got, data[:10]) {
		t.Fatalf("after truncate to 10: %d bytes", len(got))
	}
	if err := os.Truncate(path, 20); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, append(data[:10:10], make([]byte, 10)...)) {
		t.Fatalf("after growing to 20: %q", got)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if got := e.stored(t, "f"); len(got) != 0 {
		t.Fatalf("after truncate to 0: %d bytes", len(got))
	}

	// A random write into a file larger than the staging limit: EFBIG.
	if err := os.WriteFile(path, random(t, 5<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err = os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte("x"), 100)
	wantErrno(t, "random write past the staging limit", err, syscall.EFBIG)
	f.Close()
}

func TestUnsupportedErrnos(t *testing.T) {
	e := newEnv(t)
	_, mnt := e.mount(t, "m", e.config())
	p := func(s string) string { return filepath.Join(mnt, s) }
	if err := os.WriteFile(p("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "link", os.Link(p("f"), p("g")), syscall.EPERM)
	wantErrno(t, "symlink", os.Symlink("f", p("s")), syscall.EPERM)
	wantErrno(t, "mkfifo", unix.Mkfifo(p("fifo"), 0o644), syscall.EPERM)
	wantErrno(t, "setxattr", unix.Setxattr(p("f"), "user.a", []byte("1"), 0), syscall.ENOTSUP)
	_, err := unix.Getxattr(p("f"), "user.a", make([]byte, 10))
	wantErrno(t, "getxattr", err, syscall.ENODATA)
	wantErrno(t, "chmod to another mode", os.Chmod(p("f"), 0o600), syscall.EPERM)
	if err := os.Chmod(p("f"), 0o644); err != nil {
		t.Errorf("chmod to the mount's mode: %v", err)
	}
	wantErrno(t, "chown", os.Chown(p("f"), 1234, 1234), syscall.EPERM)
	if err := os.Chtimes(p("f"), time.Now(), time.Now()); err != nil {
		t.Errorf("utimes (accepted, not kept): %v", err)
	}
	if err := os.WriteFile(p("g"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "rename exchange", unix.Renameat2(unix.AT_FDCWD, p("f"), unix.AT_FDCWD, p("g"), unix.RENAME_EXCHANGE), syscall.EINVAL)
	wantErrno(t, "rename noreplace", unix.Renameat2(unix.AT_FDCWD, p("f"), unix.AT_FDCWD, p("g"), unix.RENAME_NOREPLACE), syscall.EEXIST)
}

func TestFallocateTmpfile(t *testing.T) {
	e := newEnv(t)
	_, mnt := e.mount(t, "m", e.config())
	f, err := os.Create(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "fallocate", unix.Fallocate(int(f.Fd()), 0, 0, 4096), syscall.EOPNOTSUPP)
	f.Close()
	_, err = os.OpenFile(mnt, os.O_RDWR|unix.O_TMPFILE, 0o644)
	wantErrno(t, "O_TMPFILE", err, syscall.EOPNOTSUPP)
}

func TestWritePatterns(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.PartSize = 5 << 20 // S3's smallest: several parts with little data
	_, mnt := e.mount(t, "m", cfg)
	p := func(s string) string { return filepath.Join(mnt, s) }

	// Odd-sized sequential writes across part boundaries.
	data := random(t, 12<<20+777)
	f, err := os.Create(p("odd"))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 333333 {
		if _, err := f.Write(data[off:min(off+333333, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.stored(t, "odd"), data) {
		t.Fatal("odd-sized writes stored wrong")
	}

	// Reading back what is being written, then writing on.
	f, err = os.OpenFile(p("rw"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:6<<20]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := f.ReadAt(buf, 5<<20); err != nil || !bytes.Equal(buf, data[5<<20:5<<20+1000]) {
		t.Fatalf("read while writing: %v", err)
	}
	if _, err := f.Write(data[6<<20 : 7<<20]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.stored(t, "rw"), data[:7<<20]) {
		t.Fatal("read-while-write file stored wrong")
	}

	// Appending to an existing file.
	f, err = os.OpenFile(p("rw"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("appended")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.stored(t, "rw"); !bytes.Equal(got, append(data[:7<<20:7<<20], "appended"...)) {
		t.Fatalf("append: stored %d bytes", len(got))
	}

	// A reader opening and closing the file meanwhile does not cut the
	// stream short: nothing is stored until the writer closes.
	f, err = os.Create(p("long"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:6<<20]); err != nil {
		t.Fatal(err)
	}
	if r, err := os.Open(p("long")); err != nil {
		t.Fatal(err)
	} else {
		r.Close()
	}
	if _, err := os.Stat(filepath.Join(e.s3.Dir, bucket, "long")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stored before the writer closed: %v", err)
	}
	if _, err := f.Write(data[6<<20:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.stored(t, "long"), data) {
		t.Fatal("stream with a reader in between stored wrong")
	}

	// A file unlinked while it streams: its upload is aborted, nothing
	// is stored, and the close succeeds.
	f, err = os.Create(p("gone"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:6<<20]); err != nil { // one part sent
		t.Fatal(err)
	}
	if err := os.Remove(p("gone")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close of an unlinked file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.s3.Dir, bucket, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unlinked file stored: %v", err)
	}
	e.noUploadsLeft(t)

	// Overwriting a file with O_TRUNC streams it again.
	if err := writeSynced(p("rw"), []byte("short")); err != nil {
		t.Fatal(err)
	}
	if got := e.stored(t, "rw"); string(got) != "short" {
		t.Fatalf("overwrite: %q", got)
	}
}

// Many writers and readers at once, through parts and the shared upload
// slots: what the race detector should see.
func TestConcurrentFiles(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.PartSize = 5 << 20
	cfg.UploadConcurrency = 3
	_, mnt := e.mount(t, "m", cfg)
	data := random(t, 11<<20)
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		go func() {
			errs <- func() error {
				for i := 0; i < 2; i++ {
					path := filepath.Join(mnt, fmt.Sprintf("w%d-%d", w, i))
					part := data[w<<10 : w<<10+(6<<20)+i*1000]
					if err := os.WriteFile(path, part, 0o644); err != nil {
						return err
					}
					got, err := os.ReadFile(path)
					if err != nil {
						return err
					}
					if !bytes.Equal(got, part) {
						return fmt.Errorf("%s read back wrong", path)
					}
				}
				return nil
			}()
		}()
	}
	for w := 0; w < 4; w++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	e.noUploadsLeft(t)
}

// A shared writable mmap writes back through the staging file and is
// stored at the last close (msync, munmap, close).
func TestMmapWrite(t *testing.T) {
	e := newEnv(t)
	_, mnt := e.mount(t, "m", e.config())
	path := filepath.Join(mnt, "f")
	if err := os.WriteFile(path, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	// The write through the mapping happens in another process: this one
	// serves the mount, and a page fault on the mapping waits for that
	// server, which a stop-the-world pause here (the GC's) would never let
	// answer, the faulting thread being the one the pause waits for. Go
	// code that touches a FUSE mapping must not serve the mount too; the
	// test hung forever that way, once in a loaded run.
	cmd := exec.Command(os.Args[0], "-test.run=^TestMmapWriteChild$")
	cmd.Env = append(os.Environ(), "BUCKETFS_MMAP_CHILD="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mmap write in a child: %v\n%s", err, out)
	}
	// The last release may come just after the child exits.
	deadline := time.Now().Add(5 * time.Second)
	for !bytes.Equal(e.stored(t, "f")[5000:5006], []byte("mapped")) {
		if time.Now().After(deadline) {
			t.Fatal("mmap write not stored")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMmapWriteChild is TestMmapWrite's other process: it maps the file
// $BUCKETFS_MMAP_CHILD names, writes through the mapping and syncs it. Run
// by itself, it has nothing to do.
func TestMmapWriteChild(t *testing.T) {
	path := os.Getenv("BUCKETFS_MMAP_CHILD")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	copy(m[5000:], "mapped")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Error(err)
	}
	if err := unix.Munmap(m); err != nil {
		t.Error(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A sustained sequential reader is served by one GET for the rest of the
// file, not a GET per read-ahead window; a jump falls back to ranged GETs
// and the bytes are right whichever way they came.
func TestSequentialReadStreams(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.ReadParallel = 4 // the default is 1; this checks the parts go in parallel when asked
	_, mnt := e.mount(t, "w", cfg)
	data := random(t, 64<<20)
	if err := os.WriteFile(filepath.Join(mnt, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s, cold := e.mount(t, "r", cfg)
	got, err := os.ReadFile(filepath.Join(cold, "big"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("sequential read: %v (%d bytes)", err, len(got))
	}
	// Windows of 1, 2, 4 and 8 MiB, then the other 49 MiB in parts of
	// 8 MiB, four at a time: 4 + 7 GETs. At once: four parts, a fifth
	// while the reader still holds a window's buffer rather than a part's,
	// and that window's successor if still in flight. One GET stream
	// would never have more than 2 at once.
	if n := s.DataGets(); n > 12 {
		t.Fatalf("a 64 MiB sequential read took %d GETs", n)
	}
	if n := s.PeakGets(); n < 3 || n > 6 {
		t.Fatalf("a 64 MiB sequential read had up to %d GETs in flight, want 3 to 6", n)
	}

	// Sequential, a jump back, sequential again, a jump ahead, and a
	// close in the middle of a stream.
	f, err := os.Open(filepath.Join(cold, "big"))
	if err != nil {
		t.Fatal(err)
	}
	read := func(off, n int64) {
		t.Helper()
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatalf("read %d+%d: %v", off, n, err)
		}
		if !bytes.Equal(buf, data[off:off+n]) {
			t.Fatalf("read %d+%d differs", off, n)
		}
	}
	for off := int64(0); off < 30<<20; off += 1 << 20 {
		read(off, 1<<20)
	}
	read(3<<20+5, 4096)
	for off := int64(10 << 20); off < 40<<20; off += 1 << 20 {
		read(off, 1<<20)
	}
	read(60<<20, 1<<20)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
