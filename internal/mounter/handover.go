package mounter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/bucketfs"
)

// Upgrading the mounter without a pod noticing. A new mounter started with
// --takeover asks the running one (POST /v1/handover, naming a socket of
// its own in the shared state dir) for its mounts. The old one refuses new
// calls (409: the caller retries), waits for those in progress, stops each
// built-in mount between two requests (bucketfs.Server.Handover: what was
// written is stored first) and sends it over that socket: the request it
// was made with, the state to serve it, and its /dev/fuse fd. The new one
// prepares them all (bucketfs.Resume), then says so; only then does the
// old one close its fds, and the new one start serving, so no request is
// ever answered twice or lost: the kernel queues them meanwhile. If
// anything fails, the old one serves on. s3fs and rclone mounts go as
// requests only: their processes go on serving and the new mounter adopts
// them. The old mounter exits once it has handed over.

// handoverMount is one mount in a handover; the zero value ends the list.
type handoverMount struct {
	Target      string          `json:"target"`
	Kind        string          `json:"kind"`
	Source      string          `json:"source"`
	Fingerprint string          `json:"fingerprint"`
	Req         *Request        `json:"req,omitempty"`
	State       *bucketfs.State `json:"state,omitempty"` // with the /dev/fuse fd
}

// handoverAnswer is the successor's answer to the list.
type handoverAnswer struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

const handoverTimeout = 2 * time.Minute

// handOver gives every mount to the successor listening at sock, then
// makes Serve return.
func (s *Server) handOver(ctx context.Context, sock string) error {
	if filepath.Dir(sock) != s.stateDir {
		return badRequest(fmt.Errorf("socket %q: want one in the state dir %s", sock, s.stateDir))
	}
	s.mu.Lock()
	if s.handingOver {
		s.mu.Unlock()
		return conflict(fmt.Errorf("a handover is in progress"))
	}
	s.handingOver = true
	s.mu.Unlock()
	done := false
	defer func() {
		if !done {
			s.mu.Lock()
			s.handingOver = false
			s.mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, handoverTimeout)
	defer cancel()
	for { // calls in progress end first (new ones are refused)
		s.mu.Lock()
		n := len(s.busy)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("handover: calls in progress: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("handover: %w", err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	fc := fdConn{c}

	s.mu.Lock()
	targets := make([]string, 0, len(s.mounts))
	for t := range s.mounts {
		targets = append(targets, t)
	}
	s.mu.Unlock()
	sort.Strings(targets)
	var stopped []*bucketfs.Server
	fail := func(err error) error {
		for _, fs := range stopped {
			fs.Continue()
		}
		return fmt.Errorf("handover: %w", err)
	}
	for _, t := range targets {
		s.mu.Lock()
		e := s.mounts[t]
		s.mu.Unlock()
		m := handoverMount{Target: t, Kind: e.kind, Source: e.source, Fingerprint: e.fingerprint, Req: e.req}
		var f *os.File
		if e.fs != nil {
			f, m.State, err = e.fs.Handover(ctx)
			if err != nil {
				return fail(err)
			}
			stopped = append(stopped, e.fs)
		}
		err := fc.send(m, f)
		closeFile(f)
		if err != nil {
			return fail(err)
		}
	}
	if err := fc.send(handoverMount{}, nil); err != nil {
		return fail(err)
	}
	var ans handoverAnswer
	if _, err := fc.recv(&ans); err != nil {
		return fail(err)
	}
	if !ans.OK {
		return fail(fmt.Errorf("the successor refused: %s", ans.Error))
	}
	for _, fs := range stopped {
		fs.HandedOver()
	}
	s.mu.Lock()
	s.mounts = map[string]*entry{}
	s.mu.Unlock()
	done = true
	klog.InfoS("handed every mount over to a successor", "mounts", len(targets))
	s.quitOnce.Do(func() { close(s.quit) })
	return nil
}

// TakeOver asks the mounter answering at socket for its mounts, and serves
// them. With no mounter there, or one too old to hand over, there is
// nothing to take: it returns nil.
func (s *Server) TakeOver(ctx context.Context, socket string) error {
	path := filepath.Join(s.stateDir, "handover.sock")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("takeover: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("takeover: %w", err)
	}
	defer os.Remove(path)
	defer l.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("takeover: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, handoverTimeout)
	defer cancel()
	called := make(chan error, 1)
	go func() {
		called <- NewClient(socket).call(ctx, http.MethodPost, "/v1/handover", map[string]string{"Socket": path}, nil)
	}()
	accepted := make(chan *net.UnixConn, 1)
	go func() {
		if c, err := l.AcceptUnix(); err == nil {
			accepted <- c
		}
	}()
	var c *net.UnixConn
	select {
	case err := <-called:
		switch {
		case errors.Is(err, ErrUnavailable):
			return nil // no mounter: nothing to take over
		case errors.Is(err, ErrNotFound):
			klog.InfoS("the running mounter cannot hand over (too old): serving new mounts only", "socket", socket)
			return nil
		case err != nil:
			return fmt.Errorf("takeover: %w", err)
		}
		return fmt.Errorf("takeover: the mounter answered without handing over")
	case c = <-accepted:
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	fc := fdConn{c}

	var got []*entry
	var resumed []*bucketfs.Server
	var failed error
	for {
		var m handoverMount
		f, err := fc.recv(&m)
		if err != nil {
			failed = err
			break
		}
		if m.Target == "" {
			closeFile(f)
			break
		}
		e, fs, err := s.takeEntry(ctx, &m, f)
		if err != nil && failed == nil {
			failed = err
		}
		if fs != nil {
			resumed = append(resumed, fs)
		}
		if e != nil {
			got = append(got, e)
		}
	}
	if failed != nil {
		for _, fs := range resumed {
			fs.Discard()
		}
		_ = fc.send(handoverAnswer{Error: failed.Error()}, nil)
		<-called
		return fmt.Errorf("takeover: %w", failed)
	}
	if err := fc.send(handoverAnswer{OK: true}, nil); err != nil {
		for _, fs := range resumed {
			fs.Discard()
		}
		return fmt.Errorf("takeover: %w", err)
	}
	for _, fs := range resumed {
		if err := fs.Start(); err != nil {
			klog.ErrorS(err, "takeover: a mount could not be served")
		}
	}
	s.mu.Lock()
	for _, e := range got {
		s.mounts[e.req.Target] = e
	}
	s.mu.Unlock()
	if err := <-called; err != nil {
		klog.ErrorS(err, "takeover: the predecessor's answer")
	}
	klog.InfoS("took over the mounts of a predecessor", "mounts", len(got))
	return nil
}

// takeEntry makes the entry of a handed-over mount: a built-in one is
// resumed (not started yet), the others adopted.
func (s *Server) takeEntry(ctx context.Context, m *handoverMount, f *os.File) (*entry, *bucketfs.Server, error) {
	if m.Req == nil {
		closeFile(f)
		return nil, nil, fmt.Errorf("mount at %s: no request", m.Target)
	}
	if m.State == nil {
		closeFile(f)
		return &entry{req: m.Req, kind: m.Kind, source: m.Source, fingerprint: m.Fingerprint, adopted: true,
			stop: func() error { return s.mounter.Unmount(m.Target) }}, nil, nil
	}
	if f == nil {
		return nil, nil, fmt.Errorf("mount at %s: no /dev/fuse fd", m.Target)
	}
	dir, err := s.privateDir(Builtin, m.Target)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	cfg := m.Req.FS
	cfg.StagingDir = dir
	if s.keeper != nil {
		if err := saveRequest(dir, m.Req); err != nil {
			f.Close()
			return nil, nil, err
		}
		cfg.JournalPath = filepath.Join(dir, journalFile)
	}
	fd, err := bucketfs.DupFile(f)
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("mount at %s: %w", m.Target, err)
	}
	srv, err := bucketfs.Resume(ctx, fd, cfg, m.State)
	if err != nil {
		return nil, nil, err
	}
	e := s.builtinEntry(srv, m.Target, dir)
	e.req, e.kind, e.source, e.fingerprint = m.Req, m.Kind, m.Source, m.Fingerprint
	return e, srv, nil
}
