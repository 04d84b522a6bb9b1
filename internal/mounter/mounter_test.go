package mounter_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/mounter"
	"github.com/volplug/volplug/internal/testutil"
)

const bucket = "mounter-test"

type env struct {
	s3     *testutil.S3Server
	cl     *minio.Client
	dir    string
	client *mounter.Client
}

// newEnv starts an S3 server with one bucket and a mounter serving a
// socket in this process.
func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	s3 := testutil.StartS3Server(t)
	e := &env{s3: s3, cl: s3.MakeBucket(t, bucket), dir: t.TempDir()}
	t.Cleanup(func() { testutil.Cleanup(e.dir) })
	srv, err := mounter.NewServer(filepath.Join(e.dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(e.dir, "run", "mounter.sock")
	l, err := mounter.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	e.client = mounter.NewClient(sock)
	return e
}

func (e *env) request(t *testing.T, kind, name, prefix string) *mounter.Request {
	target := filepath.Join(e.dir, "mnt", name)
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	return &mounter.Request{Target: target, Kind: kind, FS: bucketfs.Config{
		Endpoint: e.s3.Endpoint, AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey,
		Bucket: bucket, Prefix: prefix, CapacityBytes: 64 << 20, AllowOther: true,
	}}
}

// Every kind mounts, serves, answers a repeat, refuses other settings at
// the same place, and unmounts leaving no mount, process or key file; no
// key ever shows in a process's argv.
func TestKinds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, kind := range []string{mounter.Builtin, mounter.S3FS, mounter.Rclone} {
		t.Run(kind, func(t *testing.T) {
			req := e.request(t, kind, kind, "vol-"+kind)
			if err := e.client.Mount(ctx, req); err != nil {
				t.Fatal(err)
			}
			if err := e.client.Mount(ctx, req); err != nil {
				t.Fatalf("a repeated mount: %v", err)
			}
			for _, pid := range pidsMentioning(t, req.Target) {
				if cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline"); bytes.Contains(cmdline, []byte(req.FS.SecretKey)) {
					t.Errorf("the secret key is in the argv of process %s", pid)
				}
			}
			data := []byte("written through " + kind)
			if err := os.WriteFile(filepath.Join(req.Target, "file"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			other := *req
			other.FS.Prefix = "elsewhere"
			if err := e.client.Mount(ctx, &other); !errors.Is(err, mounter.ErrConflict) {
				t.Errorf("another prefix at the same target: %v, want ErrConflict", err)
			}
			list, err := e.client.List(ctx)
			if err != nil || len(list) != 1 || !list[0].Alive || list[0].Source != bucket+"/vol-"+kind {
				t.Errorf("list: %+v %v", list, err)
			}
			if err := e.client.Unmount(ctx, req.Target); err != nil {
				t.Fatal(err)
			}
			if err := e.client.Unmount(ctx, req.Target); err != nil {
				t.Fatalf("a repeated unmount: %v", err)
			}
			obj, err := e.cl.GetObject(ctx, bucket, "vol-"+kind+"/file", minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			_, _ = got.ReadFrom(obj)
			if !bytes.Equal(got.Bytes(), data) {
				t.Errorf("stored %q, wrote %q", got.Bytes(), data)
			}
			if pids := pidsMentioning(t, req.Target); len(pids) != 0 {
				t.Errorf("processes left behind: %v", pids)
			}
			if left, _ := filepath.Glob(filepath.Join(e.dir, "state", kind, "*")); len(left) != 0 {
				t.Errorf("private files left behind: %v", left)
			}
			testutil.CheckClean(t, e.dir)
		})
	}
}

// A mount whose server died answers ENOTCONN; the mounter reports it dead,
// and the next mount request replaces it.
func TestDeadMountIsReplaced(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	req := e.request(t, mounter.S3FS, "dies", "")
	if err := e.client.Mount(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(req.Target, "kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pidsMentioning(t, req.Target) {
		n, _ := strconv.Atoi(pid)
		_ = syscall.Kill(n, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := os.Stat(req.Target)
		if errors.Is(err, syscall.ENOTCONN) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after kill -9 of s3fs: stat %v, want ENOTCONN", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if list, err := e.client.List(ctx); err != nil || len(list) != 1 || list[0].Alive {
		t.Errorf("list after the server died: %+v %v", list, err)
	}
	if err := e.client.Mount(ctx, req); err != nil {
		t.Fatalf("mount over a dead mount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(req.Target, "kept")); err != nil {
		t.Errorf("after the repair: %v", err)
	}
	if err := e.client.Unmount(ctx, req.Target); err != nil {
		t.Fatal(err)
	}
	testutil.CheckClean(t, e.dir)
}

// Wrong keys and an unreachable endpoint fail within seconds, with errors
// that say so, and leave nothing mounted.
func TestBadStorageFailsFast(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, kind := range []string{mounter.Builtin, mounter.S3FS} {
		bad := e.request(t, kind, "bad-key-"+kind, "")
		bad.FS.SecretKey = "wrong"
		start := time.Now()
		if err := e.client.Mount(ctx, bad); !errors.Is(err, mounter.ErrStorage) {
			t.Errorf("%s with a wrong key: %v, want ErrStorage", kind, err)
		} else if strings.Contains(err.Error(), "wrong") {
			t.Errorf("%s: the error quotes the key: %v", kind, err)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("%s with a wrong key took %v", kind, took)
		}
	}
	gone := e.request(t, mounter.Builtin, "unreachable", "")
	gone.FS.Endpoint, gone.FS.ConnectTimeout = "http://127.0.0.1:1", 2*time.Second
	start := time.Now()
	if err := e.client.Mount(ctx, gone); err == nil {
		t.Error("an unreachable endpoint mounted")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("an unreachable endpoint took %v", took)
	}
	testutil.CheckClean(t, e.dir)
}

// pidsMentioning lists the processes whose argv names path.
func pidsMentioning(t *testing.T, path string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(path+"\x00")) {
			out = append(out, e.Name())
		}
	}
	return out
}

// On its way out (SIGTERM ends Serve) the mounter waits for the uploads
// of the small files closed on its built-in mounts: they are all in the
// store when Serve returns.
func TestServeDrainsBuiltinUploads(t *testing.T) {
	e := newEnv(t)
	srv, err := mounter.NewServer(filepath.Join(e.dir, "state2"))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(e.dir, "run", "mounter2.sock")
	l, err := mounter.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, l); close(done) }()
	req := e.request(t, mounter.Builtin, "drained", "drained")
	if err := mounter.NewClient(sock).Mount(ctx, req); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := srv.Unmount(req.Target); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	const n = 64
	data := bytes.Repeat([]byte("x"), 1<<20) // the largest stored in the background: slow to go up
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(req.Target, "f"+strconv.Itoa(i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-done
	count := 0
	for obj := range e.cl.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: "drained/"}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		count++
	}
	if count != n {
		t.Errorf("%d objects in the store when Serve returned, want %d", count, n)
	}
}
