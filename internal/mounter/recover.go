package mounter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/bucketfs"
)

// Crash failover of built-in mounts. With a keeper (keeper.go), each
// built-in mount leaves in its private directory (0700, under the 0700
// state dir) what a successor needs after a SIGKILL: the request it was
// mounted with (request.json, 0600: it holds the keys, as s3fs's password
// file does) and the kernel table's journal (bucketfs/journal.go). A new
// mounter takes the fds back from the keeper and serves each mount on
// (bucketfs.Recover); one it cannot recover, it has the keeper abort, so
// it is a dead mount the node plugin cleans up.

const (
	requestFile = "request.json"
	journalFile = "journal"
)

// UseKeeper connects to the keeper at socket: from here on, built-in
// mounts are handed to it and survive a crash of this process.
// It waits up to keeperWait for one to answer (the keeper container of a
// pod may start after the mounter's).
func (s *Server) UseKeeper(ctx context.Context, socket string) error {
	deadline := time.Now().Add(keeperWait)
	for {
		k, err := dialKeeper(socket)
		if err == nil {
			s.keeper = k
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

const keeperWait = 30 * time.Second

// keep writes the request next to the mount's private files (before the
// mount exists: a crash right after finds it).
func saveRequest(dir string, req *Request) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".request-")
	if err != nil {
		return fmt.Errorf("save request: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save request: %w", err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save request: %w", err)
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, requestFile))
}

func loadRequest(dir string) (*Request, error) {
	data, err := os.ReadFile(filepath.Join(dir, requestFile))
	if err != nil {
		return nil, err
	}
	var req Request
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, fmt.Errorf("%s: %w", requestFile, err)
	}
	// Not validate(): it was validated before it was saved, and it looks
	// at the target, which would wait for the server being recovered.
	if req.Kind != Builtin || !filepath.IsAbs(req.Target) || req.FS.AccessKey == "" {
		return nil, fmt.Errorf("%s: not a built-in mount's request", requestFile)
	}
	return &req, nil
}

// keep hands a new built-in mount's fd to the keeper. Without one (or if
// it fails) the mount works as ever and dies with this process.
func (s *Server) keep(srv *bucketfs.Server, target string) {
	if s.keeper == nil {
		return
	}
	if err := s.hold(srv, target); err != nil {
		klog.ErrorS(err, "the keeper does not hold this mount: a crash of the mounter will end it", "target", target)
	}
}

// hold has the keeper hold (again: it replaces) a duplicate of the mount's fd.
func (s *Server) hold(srv *bucketfs.Server, target string) error {
	f, err := srv.DupFUSE()
	if err != nil {
		return err
	}
	defer f.Close()
	conn, err := bucketfs.ConnID(target)
	if err != nil {
		return err
	}
	return s.keeper.hold(target, conn, f)
}

// unkeep tells the keeper a mount is gone (abort: end it now).
func (s *Server) unkeep(target string, abort bool) {
	if s.keeper == nil {
		return
	}
	if err := s.keeper.drop(target, abort); err != nil {
		klog.ErrorS(err, "keeper: drop", "target", target)
	}
}

// RecoverKept serves again every mount the keeper holds that this process
// does not serve yet (a predecessor crashed). A mount that cannot be
// recovered (no request or journal, a kernel that cannot resend) is
// aborted: it answers ENOTCONN, as without a keeper.
func (s *Server) RecoverKept(ctx context.Context) error {
	if s.keeper == nil {
		s.removeStale()
		return nil
	}
	kept, err := s.keeper.take()
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	targets := make([]string, 0, len(kept))
	for t := range kept {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	for _, t := range targets {
		h := kept[t]
		s.mu.Lock()
		_, ours := s.mounts[t]
		s.mu.Unlock()
		if ours { // taken over from a live predecessor
			h.f.Close()
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, recoverTimeout)
		err := s.recoverOne(rctx, t, h.f)
		cancel()
		if err != nil {
			klog.ErrorS(err, "a mount the keeper held cannot be recovered: aborted", "target", t)
			s.unkeep(t, true)
			continue
		}
	}
	s.removeStale()
	return nil
}

// recoverTimeout bounds the recovery of one mount (mostly a listing of its
// prefix); past it, the mount is aborted.
const recoverTimeout = time.Minute

// removeStale removes the saved requests (they hold keys) and journals of
// mounts this process does not serve: unmounted while no mounter ran,
// aborted, or left by a mounter that ended without a successor.
func (s *Server) removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(s.stateDir, Builtin, "*", requestFile))
	for _, p := range dirs {
		dir := filepath.Dir(p)
		req, err := loadRequest(dir)
		if err == nil {
			s.mu.Lock()
			_, ours := s.mounts[req.Target]
			s.mu.Unlock()
			if ours {
				continue
			}
		}
		forgetSaved(dir)
	}
}

// forgetSaved removes what a mount left for a successor.
func forgetSaved(dir string) {
	for _, f := range []string{requestFile, journalFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			klog.ErrorS(err, "remove a crashed mount's state", "dir", dir)
		}
	}
}

// recoverOne serves the mount at target from the fd f (closed here).
func (s *Server) recoverOne(ctx context.Context, target string, f *os.File) error {
	dir, err := s.privateDir(Builtin, target)
	if err != nil {
		f.Close()
		return err
	}
	req, err := loadRequest(dir)
	if err != nil {
		f.Close()
		return err
	}
	if req.Target != target || req.Kind != Builtin {
		f.Close()
		return fmt.Errorf("%s: the request saved is for %s %s", target, req.Kind, req.Target)
	}
	fd, err := bucketfs.DupFile(f)
	f.Close()
	if err != nil {
		return err
	}
	cfg := req.FS
	cfg.StagingDir, cfg.JournalPath = dir, filepath.Join(dir, journalFile)
	srv, err := bucketfs.Recover(ctx, fd, cfg, target)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		if errors.Is(err, bucketfs.ErrNoResend) {
			klog.InfoS("this kernel cannot resend requests: crash failover is off", "target", target)
		}
		return err
	}
	e := s.builtinEntry(srv, target, dir)
	e.req, e.kind, e.source, e.fingerprint = req, req.Kind, req.FS.FsName, fingerprint(req)
	s.mu.Lock()
	s.mounts[target] = e
	s.mu.Unlock()
	klog.InfoS("recovered a mount after a crash of its mounter", "target", target)
	return nil
}

// keeperCheck is how often a mounter checks its keeper is there.
const keeperCheck = 2 * time.Second

// watchKeeper checks the keeper every keeperCheck until ctx ends; a keeper
// restarted (its container alone, say) holds nothing, so every built-in
// mount is handed to it again.
func (s *Server) watchKeeper(ctx context.Context) {
	if s.keeper == nil {
		return
	}
	dials, _ := s.keeper.ping()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(keeperCheck):
		}
		n, err := s.keeper.ping()
		if err != nil {
			klog.ErrorS(err, "the keeper does not answer: a crash of the mounter would end its built-in mounts")
			continue
		}
		if n == dials {
			continue
		}
		dials = n
		s.mu.Lock()
		kept := map[string]*bucketfs.Server{}
		for t, e := range s.mounts {
			if e.fs != nil {
				kept[t] = e.fs
			}
		}
		s.mu.Unlock()
		klog.InfoS("a new keeper: handing it every built-in mount", "mounts", len(kept))
		for t, fs := range kept {
			// Not while a call is on it (an unmount telling the
			// keeper to let go must not be undone here).
			done, err := s.claim(t)
			if err != nil {
				continue
			}
			s.mu.Lock()
			still := s.mounts[t] != nil && s.mounts[t].fs == fs
			s.mu.Unlock()
			if still {
				s.keep(fs, t)
			}
			done()
		}
	}
}
