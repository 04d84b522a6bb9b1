package mounter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"k8s.io/klog/v2"
	mountutils "k8s.io/mount-utils"

	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/mount"
)

// Server owns the mounts.
type Server struct {
	stateDir string // 0700: bucketfs staging files, s3fs password files
	mounter  *mount.Mounter

	mu          sync.Mutex
	mounts      map[string]*entry // by target
	busy        map[string]bool   // targets with a call in progress
	handingOver bool              // to a successor: calls are refused

	keeper *keeperClient // holds built-in mounts' fds across a crash; nil: none

	quit     chan struct{} // closed once handed over: Serve returns
	quitOnce sync.Once
}

// entry is one mount this process serves or watches.
type entry struct {
	req          *Request // in memory only: a repair mounts it again
	kind, source string
	fingerprint  string // of the whole request, keys included
	adopted      bool
	// stop unmounts and ends whatever serves the mount.
	stop func() error
	// fs serves a built-in mount; nil for the others.
	fs *bucketfs.Server
	// usage reports a built-in mount's quota; nil for the others.
	usage       func() (used, capacity int64)
	setCapacity func(int64) error
	// drain waits for a built-in mount's background uploads; nil for
	// the others.
	drain func()
}

// NewServer returns a server keeping its private files in stateDir.
func NewServer(stateDir string) (*Server, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chmod(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	return &Server{stateDir: stateDir, mounter: mount.New(), mounts: map[string]*entry{}, busy: map[string]bool{},
		quit: make(chan struct{})}, nil
}

// Listen makes the unix socket at path, readable by root only.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	return l, nil
}

// Serve answers requests on l until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/mount", s.handle(func(ctx context.Context, body []byte) (any, error) {
		var req Request
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, badRequest(err)
		}
		return nil, s.Mount(ctx, &req)
	}))
	mux.HandleFunc("POST /v1/unmount", s.handle(func(ctx context.Context, body []byte) (any, error) {
		var req struct{ Target string }
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, badRequest(err)
		}
		return nil, s.Unmount(req.Target)
	}))
	mux.HandleFunc("POST /v1/repair", s.handle(func(ctx context.Context, body []byte) (any, error) {
		var req struct{ Target string }
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, badRequest(err)
		}
		return nil, s.Repair(ctx, req.Target)
	}))
	mux.HandleFunc("POST /v1/capacity", s.handle(func(ctx context.Context, body []byte) (any, error) {
		var req struct {
			Target string
			Bytes  int64
		}
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, badRequest(err)
		}
		return nil, s.SetCapacity(req.Target, req.Bytes)
	}))
	mux.HandleFunc("POST /v1/handover", s.handle(func(ctx context.Context, body []byte) (any, error) {
		var req struct{ Socket string }
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, badRequest(err)
		}
		return nil, s.handOver(ctx, req.Socket)
	}))
	mux.HandleFunc("GET /v1/mounts", s.handle(func(ctx context.Context, _ []byte) (any, error) {
		return s.List(), nil
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	watch, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.watchKeeper(watch)
	go func() {
		select {
		case <-ctx.Done():
		case <-s.quit:
		}
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	err := srv.Serve(l)
	// The process exits next, and built-in mounts with it (unless
	// left to the keeper): the files closed on them must reach the store
	// first.
	s.drain()
	s.leaveKept()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// drain waits for the background uploads of every built-in mount.
func (s *Server) drain() {
	s.mu.Lock()
	var drains []func()
	for _, e := range s.mounts {
		if e.drain != nil {
			drains = append(drains, e.drain)
		}
	}
	s.mu.Unlock()
	for _, d := range drains {
		d()
	}
}

// Mount mounts req.FS at req.Target, or finds it mounted already with the
// same request. A dead mount at the target (its server gone) is taken down
// first; a live one with other settings is an error.
func (s *Server) Mount(ctx context.Context, req *Request) error {
	if err := req.validate(); err != nil {
		return badRequest(err)
	}
	done, err := s.claim(req.Target)
	if err != nil {
		return err
	}
	defer done()

	fp := fingerprint(req)
	s.mu.Lock()
	e := s.mounts[req.Target]
	s.mu.Unlock()
	alive, err := s.alive(req.Target)
	if err != nil {
		return err
	}
	switch {
	case e != nil && alive && e.fingerprint == fp:
		if e.setCapacity != nil && req.FS.CapacityBytes > 0 {
			return e.setCapacity(req.FS.CapacityBytes) // grown since
		}
		return nil
	case e != nil && alive:
		return conflict(fmt.Errorf("%s is mounted with other settings; unmount it first", req.Target))
	case e != nil: // dead: its server exited
		s.forget(req.Target)
		if err := e.stop(); err != nil {
			return err
		}
	case alive:
		if adopted := s.adopt(req, fp); adopted != nil {
			return adopted
		}
	default:
		// Nothing of ours, or a dead mount a predecessor left: clear it.
		if err := s.mounter.Unmount(req.Target); err != nil {
			return err
		}
	}

	var ne *entry
	switch req.Kind {
	case Builtin:
		ne, err = s.mountBuiltin(ctx, req)
	case S3FS:
		ne, err = s.mountS3FS(ctx, req)
	case Rclone:
		ne, err = s.mountRclone(ctx, req)
	}
	if err != nil {
		return err
	}
	failpoint.Hit("mounter.mount.mounted")
	ne.req, ne.kind, ne.source, ne.fingerprint = req, req.Kind, req.FS.FsName, fp
	s.mu.Lock()
	s.mounts[req.Target] = ne
	s.mu.Unlock()
	klog.InfoS("mounted", "request", req.String())
	return nil
}

// adopt takes over a live mount at the target that an earlier mounter's
// child still serves, when it is the same bucket and prefix; it returns
// nil when it did, else an error saying what is there.
func (s *Server) adopt(req *Request, fp string) error {
	info, err := s.mounter.Mounted(req.Target)
	if err != nil {
		return err
	}
	if info == nil || info.Source != req.FS.FsName || !mount.IsFUSE(info) {
		src := "nothing"
		if info != nil {
			src = info.FSType + " " + info.Source
		}
		return conflict(fmt.Errorf("%s already has %s mounted", req.Target, src))
	}
	target := req.Target
	s.mu.Lock()
	s.mounts[target] = &entry{kind: req.Kind, source: info.Source, fingerprint: fp, adopted: true,
		stop: func() error { return s.mounter.Unmount(target) }}
	s.mu.Unlock()
	klog.InfoS("adopted a mount a predecessor made", "target", target, "source", info.Source)
	return nil
}

// Repair mounts again, with the request it was made with, a mount of
// this mounter's whose server died (s3fs or rclone killed, say). A live
// mount needs nothing; a mount this mounter did not make cannot be
// repaired here (ErrNotFound): the CO stages it again.
func (s *Server) Repair(ctx context.Context, target string) error {
	s.mu.Lock()
	e := s.mounts[filepath.Clean(target)]
	s.mu.Unlock()
	if e == nil || e.req == nil {
		return notFound(fmt.Errorf("no mount of this mounter at %s to repair", target))
	}
	return s.Mount(ctx, e.req)
}

// Unmount takes down the mount at target, whoever made it, and ends what
// served it. Unmounting what is not mounted succeeds.
func (s *Server) Unmount(target string) error {
	if !filepath.IsAbs(target) {
		return badRequest(fmt.Errorf("target %q: want an absolute path", target))
	}
	target = filepath.Clean(target)
	done, err := s.claim(target)
	if err != nil {
		return err
	}
	defer done()
	s.mu.Lock()
	e := s.mounts[target]
	s.mu.Unlock()
	if e == nil {
		return s.mounter.Unmount(target) // a predecessor's, live or dead
	}
	if err := e.stop(); err != nil {
		return err
	}
	s.forget(target)
	klog.InfoS("unmounted", "target", target, "source", e.source)
	return nil
}

// SetCapacity changes the quota of a built-in mount (expansion).
func (s *Server) SetCapacity(target string, bytes int64) error {
	s.mu.Lock()
	e := s.mounts[filepath.Clean(target)]
	s.mu.Unlock()
	if e == nil {
		return notFound(fmt.Errorf("nothing of ours is mounted at %s", target))
	}
	if e.setCapacity == nil {
		return nil // s3fs and rclone only report a size; nothing enforces it
	}
	return e.setCapacity(bytes)
}

// List reports every mount, sorted by target.
func (s *Server) List() []Status {
	s.mu.Lock()
	targets := make([]string, 0, len(s.mounts))
	entries := map[string]*entry{}
	for t, e := range s.mounts {
		targets = append(targets, t)
		entries[t] = e
	}
	s.mu.Unlock()
	sort.Strings(targets)
	out := make([]Status, 0, len(targets))
	for _, t := range targets {
		e := entries[t]
		alive, _ := s.alive(t)
		st := Status{Target: t, Kind: e.kind, Source: e.source, Alive: alive, Adopted: e.adopted}
		if e.usage != nil {
			st.UsedBytes, st.CapacityBytes = e.usage()
		}
		out = append(out, st)
	}
	return out
}

// alive reports whether target is a mount point whose server answers.
func (s *Server) alive(target string) (bool, error) {
	_, err := os.Stat(target)
	if err != nil && mountutils.IsCorruptedMnt(err) {
		return false, nil
	}
	info, merr := s.mounter.Mounted(target)
	if merr != nil {
		return false, merr
	}
	return info != nil && err == nil, nil
}

func (s *Server) forget(target string) {
	s.mu.Lock()
	delete(s.mounts, target)
	s.mu.Unlock()
}

// claim marks target busy for one call; a second call on the same target
// at the same time is refused (the caller retries), as the CSI spec does.
func (s *Server) claim(target string) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handingOver {
		return nil, &httpError{code: http.StatusConflict, err: fmt.Errorf("the mounter is handing over to a successor; retry")}
	}
	if s.busy[target] {
		return nil, &httpError{code: http.StatusConflict, err: fmt.Errorf("another call on %s is in progress", target)}
	}
	s.busy[target] = true
	return func() {
		s.mu.Lock()
		delete(s.busy, target)
		s.mu.Unlock()
	}, nil
}

// privateDir returns a 0700 directory of its own for the mount at target.
func (s *Server) privateDir(kind, target string) (string, error) {
	sum := sha256.Sum256([]byte(target))
	dir := filepath.Join(s.stateDir, kind, hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("private dir: %w", err)
	}
	return dir, nil
}

// fingerprint identifies what a request mounts and how, leaving out the
// keys (a rotated key takes effect at the next mount, while a repeated
// request for the mount there succeeds) and the capacity (which can grow).
func fingerprint(req *Request) string {
	r := *req
	r.FS.AccessKey, r.FS.SecretKey, r.FS.CapacityBytes = "", "", 0
	data, _ := json.Marshal(r)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
