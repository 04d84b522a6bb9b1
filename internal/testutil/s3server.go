package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Server is a real S3 server (versitygw, posix backend) on loopback,
// private to one test.
type S3Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Dir       string // the backing directory: bucket B is Dir/B

	stop func()
}

// VersitygwPath finds the versitygw binary: $VOLPLUG_VERSITYGW, then
// bin/tools/versitygw in the repository (where `make deps` builds it), then
// $PATH. A missing binary skips the test, except under CI (CI=true), where
// it fails: CI runs `make test`, which installs it.
func VersitygwPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("VOLPLUG_VERSITYGW"); p != "" {
		return p
	}
	p := filepath.Join(ModuleRoot(tb), "bin", "tools", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal("versitygw not found (CI=true, so it may not be skipped); run scripts/install-versitygw.sh")
	}
	tb.Skip("versitygw not found; run scripts/install-versitygw.sh (make deps)")
	return ""
}

// StartS3Server starts versitygw on a free loopback port over a temporary
// directory, with random keys, waits until it answers and stops it when
// the test ends. The keys reach the server through its environment, not
// its argv, so they never show in ps.
func StartS3Server(tb testing.TB) *S3Server {
	tb.Helper()
	s := &S3Server{
		AccessKey: randomHex(tb, 10),
		SecretKey: randomHex(tb, 20),
		Dir:       tb.TempDir(),
	}
	// A free port: the kernel picks one, we release it and the server takes
	// it; another process grabbing it in between makes the wait below fail
	// clearly, not hang.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.Endpoint = "http://" + l.Addr().String()
	l.Close()
	s.start(tb)
	return s
}

// Stop stops the server (as an outage would); Start starts it again on
// the same port, directory and keys.
func (s *S3Server) Stop() { s.stop() }

// Start restarts a stopped server.
func (s *S3Server) Start(tb testing.TB) {
	tb.Helper()
	s.start(tb)
}

// RotateKeys restarts the server with new random keys, on the same port and
// directory (versitygw's root keys are fixed at start), and returns them.
func (s *S3Server) RotateKeys(tb testing.TB) (accessKey, secretKey string) {
	tb.Helper()
	s.stop()
	s.AccessKey, s.SecretKey = randomHex(tb, 10), randomHex(tb, 20)
	s.start(tb)
	return s.AccessKey, s.SecretKey
}

func (s *S3Server) start(tb testing.TB) {
	tb.Helper()
	bin := VersitygwPath(tb)
	addr := strings.TrimPrefix(s.Endpoint, "http://")
	logPath := filepath.Join(tb.TempDir(), "versitygw.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer logFile.Close()

	// --keep-alive: without it versitygw closes every connection, and a
	// client pays a TCP handshake per request.
	cmd := exec.Command(bin, "--port", addr, "--keep-alive", "posix", s.Dir)
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY_ID="+s.AccessKey,
		"ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start versitygw: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
	}
	tb.Cleanup(s.stop)

	// Any HTTP answer (403 for an unsigned request) means it serves.
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(logPath)
			tb.Fatalf("versitygw exited at start: %v\n%s", err, log)
		default:
		}
		resp, err := client.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			tb.Fatalf("versitygw at %s does not answer: %v\n%s", addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
