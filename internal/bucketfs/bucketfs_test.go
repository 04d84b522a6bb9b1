package bucketfs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/testutil"
)

const bucket = "vol-bucket"

// env is a real S3 server with one bucket, and a directory for mounts
// that must be empty of them when the test ends.
type env struct {
	s3  *testutil.S3Server
	cl  *minio.Client
	dir string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	testutil.RequireRoot(t)
	s3 := testutil.StartS3Server(t)
	cl, err := minio.New(strings.TrimPrefix(s3.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &env{s3: s3, cl: cl, dir: t.TempDir()}
	t.Cleanup(func() {
		testutil.CheckClean(t, e.dir)
		testutil.Cleanup(e.dir)
	})
	return e
}

func (e *env) config() bucketfs.Config {
	return bucketfs.Config{
		Endpoint:   e.s3.Endpoint,
		AccessKey:  e.s3.AccessKey,
		SecretKey:  e.s3.SecretKey,
		Bucket:     bucket,
		StagingDir: filepath.Join(e.dir, "staging"),
	}
}

// mount mounts cfg at a new directory and unmounts it when the test ends.
func (e *env) mount(t testing.TB, name string, cfg bucketfs.Config) (*bucketfs.Server, string) {
	t.Helper()
	mnt := filepath.Join(e.dir, name)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := bucketfs.Mount(context.Background(), mnt, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return s, mnt
}

// stored is an object's content as the server keeps it on disk.
func (e *env) stored(t *testing.T, key string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.s3.Dir, bucket, key))
	if err != nil {
		t.Fatalf("object %s: %v", key, err)
	}
	return b
}

// keys lists the bucket through S3.
func (e *env) keys(t *testing.T) []string {
	t.Helper()
	var keys []string
	for obj := range e.cl.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	return keys
}

// noUploadsLeft fails the test if a multipart upload was left open.
func (e *env) noUploadsLeft(t *testing.T) {
	t.Helper()
	res, err := minio.Core{Client: e.cl}.ListMultipartUploads(context.Background(), bucket, "", "", "", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Uploads) != 0 {
		t.Errorf("multipart uploads left: %+v", res.Uploads)
	}
}

// writeSynced is os.WriteFile with an fsync before the close: a small
// file is stored in the background after its close, in the store for
// certain only after an fsync.
func writeSynced(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func TestRoundTripAndSecondMount(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Prefix = "vols/a"
	_, mnt := e.mount(t, "m1", cfg)

	small := []byte("hello, bucket\n")
	large := random(t, 21<<20) // three parts of 8 MiB: a streamed multipart upload
	if err := writeSynced(filepath.Join(mnt, "small"), small); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "large"), large, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSynced(filepath.Join(mnt, "empty"), nil); err != nil {
		t.Fatal(err)
	}
	if got := e.stored(t, "vols/a/large"); !bytes.Equal(got, large) {
		t.Fatalf("stored large object differs (%d bytes, want %d)", len(got), len(large))
	}
	if got := e.stored(t, "vols/a/small"); !bytes.Equal(got, small) {
		t.Fatalf("stored small object: %q", got)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "large"))
	if err != nil || !bytes.Equal(got, large) {
		t.Fatalf("read back large: %v (%d bytes)", err, len(got))
	}

	// A second mount of the same prefix sees it all, from the store.
	_, mnt2 := e.mount(t, "m2", cfg)
	names := map[string]int64{}
	ents, err := os.ReadDir(mnt2)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range ents {
		fi, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		names[de.Name()] = fi.Size()
	}
	if len(names) != 3 || names["large"] != int64(len(large)) || names["small"] != int64(len(small)) || names["empty"] != 0 {
		t.Fatalf("second mount lists %v", names)
	}
	got, err = os.ReadFile(filepath.Join(mnt2, "large"))
	if err != nil || !bytes.Equal(got, large) {
		t.Fatalf("second mount reads large: %v", err)
	}
	// Random reads (no read-ahead) return the right bytes too.
	f, err := os.Open(filepath.Join(mnt2, "large"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{17 << 20, 5, 9<<20 - 3, 21<<20 - 10} {
		buf := make([]byte, 100)
		n, _ := f.ReadAt(buf, off)
		if !bytes.Equal(buf[:n], large[off:min(off+100, int64(len(large)))]) {
			t.Fatalf("ReadAt %d differs", off)
		}
	}
}

func TestQuota(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.CapacityBytes = 10 << 20
	s, mnt := e.mount(t, "m", cfg)

	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if size := int64(st.Blocks) * st.Bsize; size != 10<<20 {
		t.Fatalf("df size %d, want %d", size, 10<<20)
	}
	if err := os.WriteFile(filepath.Join(mnt, "a"), random(t, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join(mnt, "b"), random(t, 4<<20), 0o644)
	wantErrno(t, "write past the quota", err, syscall.ENOSPC)
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free > 2<<20 {
		t.Errorf("df free %d after 8 MiB of 10 (and a failed write)", free)
	}

	// Expansion: the same write now fits.
	if err := s.SetCapacity(20 << 20); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if size := int64(st.Blocks) * st.Bsize; size != 20<<20 {
		t.Fatalf("df size %d after SetCapacity, want %d", size, 20<<20)
	}
	if err := os.WriteFile(filepath.Join(mnt, "b"), random(t, 4<<20), 0o644); err != nil {
		t.Fatalf("write after expansion: %v", err)
	}
	// Deleting gives the space back; usage is counted again at mount.
	if err := os.Remove(filepath.Join(mnt, "a")); err != nil {
		t.Fatal(err)
	}
	if used, _ := s.Usage(); used != 4<<20 {
		t.Errorf("usage %d after removing a, want %d", used, 4<<20)
	}
	s2, _ := e.mount(t, "m2", cfg)
	if used, _ := s2.Usage(); used != 4<<20 {
		t.Errorf("usage counted at mount %d, want %d", used, 4<<20)
	}

}

func TestOwnerModesReadOnly(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	_, rw := e.mount(t, "rw", cfg)
	if err := os.Mkdir(filepath.Join(rw, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rw, "d/f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}

	cfg.UID, cfg.GID, cfg.FileMode, cfg.DirMode, cfg.ReadOnly = 1000, 2000, 0o640, 0o750, true
	_, ro := e.mount(t, "ro", cfg)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(ro, "d/f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000 || st.Gid != 2000 || st.Mode != syscall.S_IFREG|0o640 {
		t.Errorf("file: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode)
	}
	if err := unix.Stat(filepath.Join(ro, "d"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000 || st.Gid != 2000 || st.Mode != syscall.S_IFDIR|0o750 {
		t.Errorf("dir: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode)
	}
	if got, err := os.ReadFile(filepath.Join(ro, "d/f")); err != nil || string(got) != "data" {
		t.Fatalf("read-only read: %q %v", got, err)
	}
	wantErrno(t, "write on read-only", os.WriteFile(filepath.Join(ro, "d/f"), []byte("x"), 0o644), syscall.EROFS)
	wantErrno(t, "create on read-only", os.WriteFile(filepath.Join(ro, "new"), []byte("x"), 0o644), syscall.EROFS)
	wantErrno(t, "mkdir on read-only", os.Mkdir(filepath.Join(ro, "x"), 0o755), syscall.EROFS)
	wantErrno(t, "unlink on read-only", os.Remove(filepath.Join(ro, "d/f")), syscall.EROFS)
}

func TestMountFailsFast(t *testing.T) {
	e := newEnv(t)
	mnt := filepath.Join(e.dir, "m")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	wrongKey := e.config()
	wrongKey.SecretKey = "not-the-secret"
	wrongAccess := e.config()
	wrongAccess.AccessKey = "nobody"
	noBucket := e.config()
	noBucket.Bucket = "no-such-bucket"
	dead := e.config()
	dead.Endpoint = "http://127.0.0.1:1" // nothing listens there
	// A server that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	mute := e.config()
	mute.Endpoint = "http://" + l.Addr().String()
	mute.ConnectTimeout = 2 * time.Second
	for name, tc := range map[string]struct {
		cfg  bucketfs.Config
		want string
	}{
		"wrong secret":  {wrongKey, "access denied"},
		"unknown key":   {wrongAccess, "access denied"},
		"no bucket":     {noBucket, "does not exist"},
		"dead endpoint": {dead, "127.0.0.1:1"},
		"mute endpoint": {mute, "no answer within 2s"},
	} {
		start := time.Now()
		s, err := bucketfs.Mount(context.Background(), mnt, tc.cfg)
		if err == nil {
			s.Unmount()
			t.Errorf("%s: mounted", name)
			continue
		}
		t.Logf("%s: %v", name, err)
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: failed after %v", name, took)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", name, err, tc.want)
		}
		if strings.Contains(err.Error(), e.s3.SecretKey) || strings.Contains(err.Error(), "not-the-secret") {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
}

// The design the mounter process builds on: one party mounts /dev/fuse
// and holds the fd, a server serves it as /dev/fd/N, and the mounting
// party unmounts.
func TestServeMountedFD(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	mnt := filepath.Join(e.dir, "m")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	dev, err := bucketfs.MountFUSE(mnt, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	fdPath := fmt.Sprintf("/dev/fd/%d", dev.Fd())
	s, err := bucketfs.Mount(context.Background(), fdPath, cfg)
	if err != nil {
		unix.Unmount(mnt, 0)
		t.Fatal(err)
	}
	bucketfs.PollHack(mnt) // this process uses the mount it serves
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("through the fd"), 0o644); err != nil {
		t.Error(err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(got) != "through the fd" {
		t.Errorf("read back: %q %v", got, err)
	}
	if s.Unmount() == nil {
		t.Error("Unmount of a /dev/fd/N server succeeded; the mounter must unmount")
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server still running 10 s after the unmount")
	}
}

// Another client's changes show within the cache TTL.
func TestOtherClientsChanges(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.CacheTTL = 200 * time.Millisecond
	_, mnt := e.mount(t, "m", cfg)
	if ents, err := os.ReadDir(mnt); err != nil || len(ents) != 0 {
		t.Fatalf("empty bucket lists %v %v", ents, err)
	}
	if _, err := e.cl.PutObject(context.Background(), bucket, "dir/x", bytes.NewReader([]byte("from elsewhere")), 14, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got, err := os.ReadFile(filepath.Join(mnt, "dir/x")); err != nil || string(got) != "from elsewhere" {
		t.Fatalf("object put by another client: %q %v", got, err)
	}
	// An implicit directory (no marker) lists and cannot be removed while
	// it has keys.
	wantErrno(t, "rmdir of an implicit directory", unix.Rmdir(filepath.Join(mnt, "dir")), syscall.ENOTEMPTY)
}

// Keys rotate on a mounted filesystem; keys that do not open the bucket
// are refused and the old ones stay.
func TestSetKeys(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.CacheTTL = -1 // every stat asks the server
	s, mnt := e.mount(t, "m", cfg)
	if err := os.WriteFile(filepath.Join(mnt, "before"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.SetKeys(context.Background(), "nobody", "wrong"); err == nil || strings.Contains(err.Error(), "wrong") {
		t.Errorf("SetKeys with wrong keys: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "still"), []byte("2"), 0o644); err != nil {
		t.Fatalf("the old keys were dropped: %v", err)
	}

	ak, sk := e.s3.RotateKeys(t)
	err := os.WriteFile(filepath.Join(mnt, "stale"), []byte("3"), 0o644)
	wantErrno(t, "write with the old keys", err, syscall.EACCES)
	if err := s.SetKeys(context.Background(), ak, sk); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "after"), []byte("4"), 0o644); err != nil {
		t.Fatalf("write with the new keys: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "before")); err != nil || string(got) != "1" {
		t.Fatalf("read with the new keys: %q %v", got, err)
	}
}

// While the server is down, calls fail (EIO) in bounded time instead of
// hanging; when it is back, the mount works again.
func TestServerOutage(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.CacheTTL = -1
	_, mnt := e.mount(t, "m", cfg)
	if err := writeSynced(filepath.Join(mnt, "f"), []byte("data")); err != nil {
		t.Fatal(err)
	}
	e.s3.Stop()
	start := time.Now()
	_, err := os.Stat(filepath.Join(mnt, "g"))
	took := time.Since(start)
	wantErrno(t, "stat with the server down", err, syscall.EIO)
	t.Logf("stat with the server down failed after %v", took)
	if took > 30*time.Second {
		t.Errorf("stat took %v with the server down", took)
	}
	e.s3.Start(t)
	if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(got) != "data" {
		t.Fatalf("after the server came back: %q %v", got, err)
	}
}

// A pod's non-root user reaches the files through the mount's owner and
// modes (allow_other, checked by the kernel): the fsGroup case.
func TestNonRootAccess(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.AllowOther, cfg.UID, cfg.GID, cfg.FileMode, cfg.DirMode = true, 0, 2000, 0o660, 0o770
	_, mnt := e.mount(t, "m", cfg)
	for _, d := range []string{filepath.Dir(e.dir), e.dir} { // temp dirs are 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(mnt, "f")
	as := func(uid, gid uint32, name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := as(3000, 2000, "cp", "/etc/hostname", path); err != nil {
		t.Fatalf("member of group 2000 writes: %v", err)
	}
	if err := as(3001, 2000, "cat", path); err != nil {
		t.Fatalf("another member reads: %v", err)
	}
	if err := as(3000, 3000, "cat", path); err == nil {
		t.Fatal("a user outside the group read the file")
	}
}
