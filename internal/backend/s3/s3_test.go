package s3

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/mounter"
	"github.com/volplug/volplug/internal/testutil"
)

// rig is a real S3 server, a mounter serving a socket in this process, and
// the backend using both.
type rig struct {
	t       *testing.T
	s3      *testutil.S3Server
	b       *Backend
	dir     string
	secrets backend.Secrets
	cl      *minio.Client
}

func newRig(t *testing.T) *rig {
	t.Helper()
	testutil.RequireRoot(t)
	r := &rig{t: t, s3: testutil.StartS3Server(t), dir: t.TempDir()}
	t.Cleanup(func() { testutil.Cleanup(r.dir) })
	srv, err := mounter.NewServer(filepath.Join(r.dir, "mounter"))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(r.dir, "mounter.sock")
	l, err := mounter.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	r.b = New(Options{MounterSocket: sock})
	r.secrets = backend.Secrets{"accessKeyID": r.s3.AccessKey, "secretAccessKey": r.s3.SecretKey, "endpoint": r.s3.Endpoint}
	c, _ := r.b.credentialsFrom(r.secrets, nil)
	if r.cl, err = client(c); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) must(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) path(parts ...string) string {
	return filepath.Join(append([]string{r.dir}, parts...)...)
}

// stage and publish v at a staging path and a target of its own.
func (r *rig) use(v *backend.Volume, name string, readOnly bool) (staging, target string) {
	staging, target = r.path("staging", name), r.path("pods", name, "vol")
	r.must(r.b.Stage(context.Background(), &backend.StageRequest{ID: v.ID, StagingPath: staging, Context: v.Context, Secrets: r.secrets, ReadOnly: readOnly}))
	r.must(r.b.Publish(context.Background(), &backend.PublishRequest{ID: v.ID, StagingPath: staging, TargetPath: target, ReadOnly: readOnly}))
	return staging, target
}

func (r *rig) release(v *backend.Volume, staging, target string) {
	r.must(r.b.Unpublish(context.Background(), v.ID, target))
	r.must(r.b.Unstage(context.Background(), v.ID, staging))
}

// A bucket per volume: made and marked once, mounted with its quota
// (statfs shows it, writing past it is ENOSPC, expansion raises it), shared
// by two mounts, and removed with everything in it.
func TestBucketVolume(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	req := &backend.CreateRequest{Name: "pvc-0123", MinSize: 8 << 20, Secrets: r.secrets}
	v, err := r.b.CreateVolume(ctx, req)
	r.must(err)
	if v.ID != "pvc-0123" || v.Size != 8<<20 {
		t.Fatalf("volume %+v", v)
	}
	again, err := r.b.CreateVolume(ctx, req)
	if err != nil || again.ID != v.ID {
		t.Fatalf("a repeated create: %+v %v", again, err)
	}
	if _, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "pvc-0123", MinSize: 16 << 20, Secrets: r.secrets}); !errors.Is(err, backend.ErrAlreadyExists) {
		t.Errorf("same name, larger: %v", err)
	}

	s1, t1 := r.use(v, "a", false)
	s2, t2 := r.use(v, "b", false)
	if entries, err := os.ReadDir(t1); err != nil || len(entries) != 0 {
		t.Errorf("a new bucket volume shows %v (%v): the mark must stay hidden", entries, err)
	}
	if err := os.Mkdir(filepath.Join(t1, ".volplug"), 0o755); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir of the mark's directory: %v, want EPERM", err)
	}
	r.must(os.WriteFile(filepath.Join(t1, "hello"), []byte("from a"), 0o644))
	time.Sleep(1100 * time.Millisecond) // the other mount's metadata cache
	if got, err := os.ReadFile(filepath.Join(t2, "hello")); err != nil || string(got) != "from a" {
		t.Fatalf("read through the second mount: %q %v", got, err)
	}
	if id, err := r.b.VolumeAt(ctx, t2); err != nil || id != v.ID {
		t.Errorf("VolumeAt = %q %v", id, err)
	}
	st, err := r.b.Stats(ctx, v.ID, t1)
	r.must(err)
	if st.TotalBytes != 8<<20 {
		t.Errorf("stats total %d, want the quota", st.TotalBytes)
	}
	big := make([]byte, 9<<20)
	if err := os.WriteFile(filepath.Join(t1, "big"), big, 0o644); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("writing past the quota: %v, want ENOSPC", err)
	}
	_ = os.Remove(filepath.Join(t1, "big"))
	size, nodeToo, err := r.b.ExpandVolume(ctx, v.ID, 32<<20, r.secrets)
	if err != nil || size != 32<<20 || !nodeToo {
		t.Fatalf("expand: %d %v %v", size, nodeToo, err)
	}
	if got, err := r.b.ExpandFilesystem(ctx, v.ID, t1, 32<<20); err != nil || got != 32<<20 {
		t.Fatalf("node expand: %d %v", got, err)
	}
	r.must(os.WriteFile(filepath.Join(t1, "big"), big, 0o644))

	if err := r.b.Unstage(ctx, v.ID, s1); !errors.Is(err, backend.ErrPrecondition) {
		t.Errorf("unstage while published: %v", err)
	}
	r.release(v, s1, t1)
	r.release(v, s2, t2)
	r.must(r.b.Unstage(ctx, v.ID, s2)) // a repeat
	r.must(r.b.DeleteVolume(ctx, v.ID, r.secrets))
	r.must(r.b.DeleteVolume(ctx, v.ID, r.secrets))
	if ok, err := r.cl.BucketExists(ctx, v.ID); err != nil || ok {
		t.Errorf("the bucket outlived its volume: %v %v", ok, err)
	}
	testutil.CheckClean(t, r.dir)
}

// A prefix per volume in a shared bucket: nothing outside the prefix is
// touched, a prefix that holds someone's objects is refused, and a static
// volume (no mark) survives DeleteVolume.
func TestPrefixVolumesAndStaticVolumes(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	params := map[string]string{"bucket": "shared", "prefix": "k8s", "mounter": mounter.S3FS}
	if _, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "pvc-1", Parameters: params, Secrets: r.secrets}); !errors.Is(err, backend.ErrPrecondition) {
		t.Errorf("a shared bucket that does not exist: %v", err)
	}
	r.must(r.cl.MakeBucket(ctx, "shared", minio.MakeBucketOptions{}))
	put := func(key string) {
		_, err := r.cl.PutObject(ctx, "shared", key, strings.NewReader("x"), 1, minio.PutObjectOptions{})
		r.must(err)
	}
	put("theirs/file")
	put("k8s/taken/file")
	if _, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "taken", Parameters: params, Secrets: r.secrets}); !errors.Is(err, backend.ErrAlreadyExists) {
		t.Errorf("a prefix holding someone's objects: %v", err)
	}
	v, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "pvc-1", Parameters: params, Secrets: r.secrets})
	r.must(err)
	if v.ID != "shared/k8s/pvc-1" || v.Context["mounter"] != mounter.S3FS {
		t.Fatalf("volume %+v", v)
	}
	staging, target := r.use(v, "p", false)
	r.must(os.WriteFile(filepath.Join(target, "mine"), []byte("y"), 0o644))
	r.release(v, staging, target)
	// A writer that died mid-upload left parts behind.
	core := minio.Core{Client: r.cl}
	_, err = core.NewMultipartUpload(ctx, "shared", "k8s/pvc-1/abandoned", minio.PutObjectOptions{})
	r.must(err)
	r.must(r.b.DeleteVolume(ctx, v.ID, r.secrets))
	for u := range r.cl.ListIncompleteUploads(ctx, "shared", "k8s/pvc-1/", true) {
		t.Errorf("an abandoned upload outlived its volume: %+v", u)
	}
	var keys []string
	for o := range r.cl.ListObjects(ctx, "shared", minio.ListObjectsOptions{Recursive: true}) {
		r.must(o.Err)
		keys = append(keys, o.Key)
	}
	if strings.Join(keys, " ") != "k8s/taken/file theirs/file" {
		t.Errorf("after delete the shared bucket holds %v", keys)
	}

	static := &backend.Volume{ID: "shared/theirs", Context: map[string]string{"uid": "1000"}}
	staging, target = r.use(static, "static", true)
	if got, err := os.ReadFile(filepath.Join(target, "file")); err != nil || string(got) != "x" {
		t.Errorf("static volume: %q %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing a read-only volume: %v", err)
	}
	r.release(static, staging, target)
	r.must(r.b.DeleteVolume(ctx, static.ID, r.secrets))
	if _, err := r.cl.StatObject(ctx, "shared", "theirs/file", minio.StatObjectOptions{}); err != nil {
		t.Errorf("DeleteVolume of a static volume removed its data: %v", err)
	}
	testutil.CheckClean(t, r.dir)
}

// Bad input and bad credentials give clear errors of the right kind,
// quickly, and mount nothing.
func TestBadRequests(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	for _, id := range []string{"", "UPPER", "a/../b", "ab", "bucket//x", "/abs", "ok-bucket/x\x00y"} {
		if err := r.b.ValidateID(id); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("ValidateID(%q) = %v", id, err)
		}
	}
	for name, req := range map[string]*backend.CreateRequest{
		"no secrets":      {Name: "a"},
		"unknown param":   {Name: "a", Secrets: r.secrets, Parameters: map[string]string{"color": "blue"}},
		"bad mounter":     {Name: "a", Secrets: r.secrets, Parameters: map[string]string{"mounter": "goofys"}},
		"bad mode":        {Name: "a", Secrets: r.secrets, Parameters: map[string]string{"fileMode": "rwx"}},
		"block":           {Name: "a", Secrets: r.secrets, Block: true},
		"bad endpoint":    {Name: "a", Secrets: backend.Secrets{"accessKeyID": "a", "secretAccessKey": "b", "endpoint": "ftp://x"}},
		"key in a secret": {Name: "a", Secrets: backend.Secrets{"SecretId": "a", "endpoint": r.s3.Endpoint}},
	} {
		if _, err := r.b.CreateVolume(ctx, req); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
	wrong := backend.Secrets{"SecretId": r.s3.AccessKey, "SecretKey": "wrong", "endpoint": r.s3.Endpoint}
	start := time.Now()
	if _, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "a", Secrets: wrong}); !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("wrong key: %v, want unavailable", err)
	}
	gone := backend.Secrets{"accessKeyID": "a", "secretAccessKey": "b", "endpoint": "http://127.0.0.1:1"}
	if _, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "a", Secrets: gone}); !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("unreachable endpoint: %v, want unavailable", err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("bad credentials and a dead endpoint took %v", took)
	}
	err := r.b.Stage(ctx, &backend.StageRequest{ID: "no-such-bucket", StagingPath: r.path("s"), Secrets: r.secrets})
	if !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("stage of a missing bucket: %v", err)
	}
	testutil.CheckClean(t, r.dir)
}
