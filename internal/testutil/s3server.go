package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/volplug/volplug/internal/s3server"
)

// S3Server is a real S3 server (versitygw, posix backend) on loopback,
// private to one test.
type S3Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Dir       string // the backing directory: bucket B is Dir/B

	srv *s3server.Server
}

// VersitygwPath finds the versitygw binary (ToolPath).
func VersitygwPath(tb testing.TB) string {
	tb.Helper()
	return ToolPath(tb, "versitygw", "VOLPLUG_VERSITYGW", "scripts/install-versitygw.sh")
}

// HelmPath finds the helm binary (ToolPath).
func HelmPath(tb testing.TB) string {
	tb.Helper()
	return ToolPath(tb, "helm", "VOLPLUG_HELM", "scripts/install-helm.sh")
}

// ToolPath finds a tool the tests run: $env, then bin/tools/name in the
// repository (where `make deps` builds it with script), then $PATH. A
// missing tool skips the test, except under CI (CI=true), where it fails:
// CI runs `make test`, which installs it.
func ToolPath(tb testing.TB, name, env, script string) string {
	tb.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p := filepath.Join(ModuleRoot(tb), "bin", "tools", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s not found (CI=true, so it may not be skipped); run %s", name, script)
	}
	tb.Skipf("%s not found; run %s (make deps)", name, script)
	return ""
}

// StartS3Server starts versitygw on a free loopback port over a temporary
// directory, with random keys (in its environment, never its argv), waits
// until it answers and stops it when the test ends.
func StartS3Server(tb testing.TB) *S3Server {
	tb.Helper()
	s := &S3Server{Dir: tb.TempDir()}
	s.start(tb)
	return s
}

// Stop stops the server (as an outage would); Start starts it again on
// the same port, directory and keys.
func (s *S3Server) Stop() { _ = s.srv.Stop() }

// Start restarts a stopped server.
func (s *S3Server) Start(tb testing.TB) {
	tb.Helper()
	s.start(tb)
}

// RotateKeys restarts the server with new random keys, on the same port and
// directory (versitygw's root keys are fixed at start), and returns them.
func (s *S3Server) RotateKeys(tb testing.TB) (accessKey, secretKey string) {
	tb.Helper()
	s.Stop()
	s.AccessKey, s.SecretKey = randomHex(tb, 10), randomHex(tb, 20)
	s.start(tb)
	return s.AccessKey, s.SecretKey
}

// start runs the server on s's address and keys, or on a free port with
// random keys the first time.
func (s *S3Server) start(tb testing.TB) {
	tb.Helper()
	srv, err := s3server.Start(context.Background(), s3server.Options{
		Bin:       VersitygwPath(tb),
		DataDir:   s.Dir,
		LogPath:   filepath.Join(tb.TempDir(), "versitygw.log"),
		Addr:      strings.TrimPrefix(s.Endpoint, "http://"),
		AccessKey: s.AccessKey, SecretKey: s.SecretKey,
	})
	if err != nil {
		tb.Fatal(err)
	}
	s.srv = srv
	s.Endpoint, s.AccessKey, s.SecretKey = srv.Endpoint, srv.AccessKey, srv.SecretKey
	tb.Cleanup(func() { _ = srv.Stop() })
}

func randomHex(tb testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Client returns an S3 client of the server, with its root keys.
func (s *S3Server) Client(tb testing.TB) *minio.Client {
	tb.Helper()
	cl, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return cl
}

// MakeBucket makes a bucket and returns a client of the server.
func (s *S3Server) MakeBucket(tb testing.TB, bucket string) *minio.Client {
	tb.Helper()
	cl := s.Client(tb)
	if err := cl.MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{}); err != nil {
		tb.Fatal(err)
	}
	return cl
}
