package flexdriver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/volplug/volplug/internal/testutil"
	"github.com/volplug/volplug/pkg/flex"
)

// The s3 driver, run as kubelet runs it: the bucket is mounted by a mounter
// the driver starts detached (the call still answers exactly one JSON
// object, and returns), owned by the pod's fsGroup, and unmounted from the
// path alone; the keys reach no log and no argv.
func TestS3Driver(t *testing.T) {
	testutil.RequireRoot(t)
	s3 := testutil.StartS3Server(t)
	cl := s3.MakeBucket(t, "flex-bucket")
	e := rootEnv(t, false)
	e.cfg.MounterSocket = filepath.Join(e.dir, "run", "mounter.sock")
	data, _ := json.Marshal(e.cfg)
	if err := os.WriteFile(filepath.Join(e.dir, "volplug.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range mounterPIDs(t, e.cfg.MounterSocket) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	})
	e.bin = filepath.Join(binDir, "volplug~s3", "s3")
	if err := os.MkdirAll(filepath.Dir(e.bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(volplugBin(), e.bin); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}

	res := e.run(flex.StatusSuccess, "init")
	if res.Capabilities == nil || res.Capabilities.Attach {
		t.Fatalf("init: %+v", res.Capabilities)
	}
	e.run(flex.StatusNotSupported, "attach", "{}", "node1")
	secret := func(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) }
	opts := options("pv-bucket", map[string]string{
		"bucket": "flex-bucket", "prefix": "team", "endpoint": s3.Endpoint, "capacity": "1048576",
		flex.SecretPrefix + "accessKeyID": secret(s3.AccessKey), flex.SecretPrefix + "secretAccessKey": secret(s3.SecretKey),
		flex.KeyFsGroup: "2000",
	})
	pod := e.podDir("p1")
	e.run(flex.StatusSuccess, "mount", pod, opts)
	e.run(flex.StatusSuccess, "mount", pod, opts) // kubelet may repeat it
	if err := os.WriteFile(filepath.Join(pod, "hello"), []byte("from a flex pod"), 0o664); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(pod, "hello"), &st); err != nil || st.Gid != 2000 {
		t.Errorf("owner group %d (%v), want the fsGroup 2000", st.Gid, err)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(pod, &fs); err != nil || int64(fs.Blocks)*fs.Bsize != 1<<20 {
		t.Errorf("df shows %d bytes (%v), want the 1 MiB capacity", int64(fs.Blocks)*fs.Bsize, err)
	}
	if len(mounterPIDs(t, e.cfg.MounterSocket)) != 1 {
		t.Errorf("no mounter serves the mount")
	}

	e.run(flex.StatusSuccess, "unmount", pod)
	e.run(flex.StatusSuccess, "unmount", pod)
	if mounted(t, pod) {
		t.Error("still mounted after unmount")
	}
	obj, err := cl.GetObject(context.Background(), "flex-bucket", "team/hello", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	_, _ = got.ReadFrom(obj)
	if got.String() != "from a flex pod" {
		t.Errorf("the bucket holds %q", got.String())
	}

	bad := options("pv-bad", map[string]string{"bucket": "flex-bucket", "endpoint": s3.Endpoint,
		flex.SecretPrefix + "accessKeyID": secret(s3.AccessKey), flex.SecretPrefix + "secretAccessKey": secret("wrong")})
	e.run(flex.StatusFailure, "mount", e.podDir("p2"), bad)
	e.run(flex.StatusFailure, "mount", e.podDir("p3"), options("pv-none", nil))

	logs, _ := os.ReadFile(e.logs)
	mlogs, _ := os.ReadFile(filepath.Join(e.dir, "log", "mounter.log"))
	for _, s := range []string{s3.SecretKey, secret(s3.SecretKey)} {
		if bytes.Contains(append(logs, mlogs...), []byte(s)) {
			t.Error("a secret reached a log")
		}
	}
	testutil.CheckClean(t, e.dir)
}

// mounterPIDs lists the mounters serving socket.
func mounterPIDs(t *testing.T, socket string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if bytes.Contains(cmdline, []byte("mounter\x00--socket\x00"+socket+"\x00")) {
			out = append(out, pid)
		}
	}
	return out
}
