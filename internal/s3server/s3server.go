// Package s3server runs a private S3 server (versitygw, posix backend) on a
// free loopback port: for tests (through internal/testutil), `volplug demo
// --backend=s3` and `volplug bench s3`. It is not for production: the keys
// are random, the data lives in a directory of the caller's.
package s3server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Options say where the server keeps its data and its log.
type Options struct {
	Bin     string // the versitygw binary
	DataDir string // the backing directory (made 0700 if missing): bucket B is DataDir/B
	LogPath string // versitygw's output
	// Addr is where to listen (host:port); empty: a free port on 127.0.0.1.
	// A restart on the same address and directory is the same server to
	// its clients.
	Addr string
	// AccessKey and SecretKey are the root keys; empty: random ones.
	AccessKey, SecretKey string
	// Wait is how long to wait for the server to answer (default 15 s).
	Wait time.Duration
}

// Server is a running versitygw.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Dir       string // the backing directory: bucket B is Dir/B
	Pid       int

	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// Start starts versitygw with random keys and waits until it answers. The
// keys reach it through its environment, never its argv, so they do not
// show in ps. It runs in a process group of its own, so a Ctrl-C at the
// terminal reaches only the caller, which still needs the server for its
// way back; it is killed if the caller dies.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Wait == 0 {
		o.Wait = 15 * time.Second
	}
	access, secret := o.AccessKey, o.SecretKey
	var err error
	if access == "" {
		if access, err = randomHex(10); err != nil {
			return nil, err
		}
	}
	if secret == "" {
		if secret, err = randomHex(20); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("s3 server data dir: %w", err)
	}
	logFile, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("s3 server log: %w", err)
	}
	defer logFile.Close()

	// A free port: the kernel picks one, we release it and the server takes
	// it; another process grabbing it in between makes the wait below fail
	// clearly, not hang.
	addr := o.Addr
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		addr = l.Addr().String()
		l.Close()
	}

	s := &Server{Endpoint: "http://" + addr, AccessKey: access, SecretKey: secret, Dir: o.DataDir, exited: make(chan struct{})}
	// --keep-alive: without it versitygw closes every connection, and a
	// client pays a TCP handshake per request.
	s.cmd = exec.Command(o.Bin, "--port", addr, "--keep-alive", "posix", o.DataDir)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+access, "ROOT_SECRET_ACCESS_KEY="+secret)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start versitygw (%s): %w", o.Bin, err)
	}
	s.Pid = s.cmd.Process.Pid
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()

	// Any HTTP answer (403 for an unsigned request) means it serves.
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	deadline := time.Now().Add(o.Wait)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("versitygw exited at start (%v); its log: %s", s.waitErr, o.LogPath)
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("waiting for versitygw: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("versitygw at %s does not answer after %s: %w (its log: %s)", addr, o.Wait, err, o.LogPath)
		}
	}
}

// Stop asks the server to exit (SIGTERM) and kills it after 5 s. Calling
// it again does nothing.
func (s *Server) Stop() error {
	var err error
	s.stopOnce.Do(func() {
		if sigErr := s.cmd.Process.Signal(syscall.SIGTERM); sigErr != nil && !errors.Is(sigErr, os.ErrProcessDone) {
			err = fmt.Errorf("stop versitygw: %w", sigErr)
		}
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
			err = errors.New("versitygw ignored SIGTERM for 5 s and was killed")
		}
	})
	return err
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random key: %w", err)
	}
	return hex.EncodeToString(b), nil
}
