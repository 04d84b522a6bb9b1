package mounter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/failpoint"
)

// mountBuiltin serves the bucket from this process.
func (s *Server) mountBuiltin(ctx context.Context, req *Request) (*entry, error) {
	dir, err := s.privateDir(Builtin, req.Target)
	if err != nil {
		return nil, err
	}
	cfg := req.FS
	cfg.StagingDir = dir
	if s.keeper != nil {
		if err := saveRequest(dir, req); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		cfg.JournalPath = filepath.Join(dir, journalFile)
	}
	failpoint.Hit("mounter.mount.dir-made")
	srv, err := bucketfs.Mount(ctx, req.Target, cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, mountFailed(err)
	}
	s.keep(srv, req.Target)
	return s.builtinEntry(srv, req.Target, dir), nil
}

// builtinEntry is the entry of a bucketfs mount served here.
func (s *Server) builtinEntry(srv *bucketfs.Server, target, dir string) *entry {
	return &entry{
		fs: srv,
		stop: func() error {
			if err := s.mounter.Unmount(target); err != nil {
				return err
			}
			select { // the server ends when the kernel lets go
			case <-waitChan(srv.Wait):
			case <-time.After(10 * time.Second):
				return fmt.Errorf("unmount %s: its server did not stop", target)
			}
			s.unkeep(target, false)
			failpoint.Hit("mounter.unmount.unmounted")
			return os.RemoveAll(dir)
		},
		usage:       srv.Usage,
		setCapacity: srv.SetCapacity,
		drain:       srv.Drain,
	}
}

func waitChan(wait func()) <-chan struct{} {
	c := make(chan struct{})
	go func() { wait(); close(c) }()
	return c
}

// mountS3FS runs s3fs in the foreground, as a child of this process, with
// its keys in a password file only root can read.
func (s *Server) mountS3FS(ctx context.Context, req *Request) (*entry, error) {
	dir, err := s.privateDir(S3FS, req.Target)
	if err != nil {
		return nil, err
	}
	fs := req.FS
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte(fs.AccessKey+":"+fs.SecretKey+"\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("s3fs password file: %w", err)
	}
	bucket := fs.Bucket
	if fs.Prefix != "" {
		bucket += ":/" + strings.TrimSuffix(fs.Prefix, "/")
	}
	opts := []string{
		"passwd_file=" + passwd,
		"url=" + fs.Endpoint,
		"use_path_request_style",
		"fsname=" + fs.FsName,
		"uid=" + strconv.Itoa(int(fs.UID)), "gid=" + strconv.Itoa(int(fs.GID)),
		"umask=" + strconv.FormatUint(uint64(0o777&^perm(fs.DirMode, 0o755)), 8),
	}
	if fs.Region != "" {
		opts = append(opts, "endpoint="+fs.Region)
	}
	if fs.AllowOther {
		opts = append(opts, "allow_other")
	}
	if fs.ReadOnly {
		opts = append(opts, "ro")
	}
	args := []string{bucket, req.Target, "-f", "-o", strings.Join(opts, ",")}
	return s.runFUSE(ctx, req, dir, "s3fs", args, nil)
}

// mountRclone runs `rclone mount` on an S3 remote defined on its command
// line; the keys go through its environment, which only root can read.
func (s *Server) mountRclone(ctx context.Context, req *Request) (*entry, error) {
	dir, err := s.privateDir(Rclone, req.Target)
	if err != nil {
		return nil, err
	}
	fs := req.FS
	remote := ":s3:" + fs.Bucket + "/" + strings.TrimSuffix(fs.Prefix, "/")
	args := []string{"mount", remote, req.Target,
		"--config", filepath.Join(dir, "rclone.conf"), // none: everything is on this line
		"--s3-provider", "Other", "--s3-endpoint", fs.Endpoint, "--s3-force-path-style",
		"--devname", fs.FsName,
		"--uid", strconv.Itoa(int(fs.UID)), "--gid", strconv.Itoa(int(fs.GID)),
		"--dir-perms", fmt.Sprintf("%#o", perm(fs.DirMode, 0o755)),
		"--file-perms", fmt.Sprintf("%#o", perm(fs.FileMode, 0o644)),
		// No write cache: with one, rclone uploads after close, in the
		// background, and an unmount right after loses what was written.
		// Without it, a write streams to the bucket and close waits for
		// the upload; random writes and overwrites are then refused
		// (rclone's own limit, documented; the built-in mounter has none).
		"--vfs-cache-mode", "off", "--cache-dir", filepath.Join(dir, "cache"),
		// versitygw and others ignore "Expect: 100-Continue" as rclone
		// spells it; waiting for it costs a second per upload.
		"--expect-continue-timeout", "0",
	}
	if fs.Region != "" {
		args = append(args, "--s3-region", fs.Region)
	}
	if fs.AllowOther {
		args = append(args, "--allow-other")
	}
	if fs.ReadOnly {
		args = append(args, "--read-only")
	}
	env := []string{"RCLONE_S3_ACCESS_KEY_ID=" + fs.AccessKey, "RCLONE_S3_SECRET_ACCESS_KEY=" + fs.SecretKey}
	return s.runFUSE(ctx, req, dir, "rclone", args, env)
}

func perm(m, def os.FileMode) os.FileMode {
	if m == 0 {
		return def
	}
	return m & os.ModePerm
}

// runFUSE starts a FUSE program in the foreground, waits until its mount
// appears at the target, and returns the entry that stops it. Its output
// goes to a log in the mount's private directory, quoted in errors.
func (s *Server) runFUSE(ctx context.Context, req *Request, dir, prog string, args, env []string) (*entry, error) {
	if err := bucketfs.Check(ctx, req.FS); err != nil {
		os.RemoveAll(dir)
		return nil, mountFailed(err)
	}
	logPath := filepath.Join(dir, prog+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s log: %w", prog, err)
	}
	defer logFile.Close()
	cmd := exec.Command(prog, args...)
	// A clean environment: the node's AWS_* settings (AWS_CA_BUNDLE breaks
	// rclone) are not the volume's.
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir}, env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a signal meant for the mounter does not end
	// the pods' mounts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, mountFailed(fmt.Errorf("start %s: %w", prog, err))
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	timeout := req.FS.ConnectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	deadline := time.Now().Add(timeout + 10*time.Second)
	for {
		info, err := s.mounter.Mounted(req.Target)
		// The mount appears before the program's own start-up checks
		// (s3fs checks the bucket and the keys in FUSE's INIT, after
		// mount(2)): only a mount that answers a stat has passed them.
		if err == nil && info != nil && info.Source == req.FS.FsName && answers(req.Target, time.Until(deadline)) {
			break
		}
		failed := ""
		select {
		case <-exited:
			failed = "exited"
		case <-ctx.Done():
			failed = "was cancelled"
		case <-time.After(20 * time.Millisecond):
			if time.Now().After(deadline) {
				failed = "did not mount in time"
			}
		}
		if failed != "" {
			_ = cmd.Process.Kill()
			<-exited
			_ = s.mounter.Unmount(req.Target)
			out, _ := os.ReadFile(logPath)
			os.RemoveAll(dir)
			return nil, mountFailed(fmt.Errorf("%s %s: %s", prog, failed, tail(out)))
		}
	}
	target := req.Target
	return &entry{stop: func() error {
		if err := s.mounter.Unmount(target); err != nil {
			return err
		}
		select { // it exits once its mount is gone
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		return os.RemoveAll(dir)
	}}, nil
}

// answers reports whether a stat of path succeeds within timeout.
func answers(path string, timeout time.Duration) bool {
	done := make(chan error, 1)
	go func() { _, err := os.Stat(path); done <- err }()
	select {
	case err := <-done:
		return err == nil
	case <-time.After(max(timeout, 0)):
		return false
	}
}

// tail is the last lines of a program's output, for an error message.
func tail(out []byte) string {
	out = bytes.TrimSpace(out)
	if len(out) > 600 {
		out = out[len(out)-600:]
	}
	if len(out) == 0 {
		return "no output"
	}
	return string(out)
}

// mountFailed marks an error of the storage (unreachable endpoint, wrong
// keys, missing bucket), which the node plugin reports to the CO as such.
func mountFailed(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &httpError{code: http.StatusGatewayTimeout, err: err}
	}
	return &httpError{code: http.StatusBadGateway, err: err}
}
