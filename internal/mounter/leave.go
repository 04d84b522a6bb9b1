package mounter

import (
	"context"
	"errors"
	"time"

	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/bucketfs"
)

// Leaving built-in mounts to the keeper. A mounter stopped (SIGTERM) with
// no successor taking over is, in Kubernetes, a mounter pod being replaced
// (a rolling upgrade of its DaemonSet) while the keeper, in a DaemonSet of
// its own, stays. So a mounter with a keeper does not end its built-in
// mounts on the way out: each stops between two requests with what was
// written stored (bucketfs.Server.Leave), the journal and the saved
// request stay, the keeper goes on holding the fd, and the next mounter
// recovers the mount exactly as after a crash (RecoverKept); requests the
// kernel queued meanwhile are answered then. If none comes, the keeper's
// grace period ends the mount, as after a crash; and a mounter killed
// while leaving (its pod's grace period over) is a crash, recovered as one.
// Without a keeper the
// mounts end with the process, as ever. s3fs and rclone mounts cannot be
// left: their own processes serve them (see the mounter command's help).

// leaveTimeout bounds storing what was written before the process exits
// (Kubernetes kills a pod at the end of its termination grace period:
// the deploy manifests give it more than this).
const leaveTimeout = 25 * time.Second

// leaveKept leaves every built-in mount to the keeper (see above). A mount
// the keeper cannot be made to hold, or one without a journal, ends with
// this process instead, and what was saved for a successor goes.
func (s *Server) leaveKept() {
	if s.keeper == nil {
		return
	}
	s.mu.Lock()
	s.handingOver = true // no call starts, and watchKeeper hands nothing again
	s.mu.Unlock()
	// Calls in progress end first (the HTTP server's shutdown stops
	// waiting for them after 10 s): a mount being made or unmounted is
	// left, or not, whole.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		n := len(s.busy)
		s.mu.Unlock()
		if n == 0 {
			break
		}
	}
	s.mu.Lock()
	left := map[string]*bucketfs.Server{}
	for t, e := range s.mounts {
		if e.fs != nil {
			left[t] = e.fs
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	n := 0
	for t, fs := range left {
		// Hand it again first: a keeper restarted since may not hold
		// it yet.
		err := s.hold(fs, t)
		if err == nil {
			err = fs.Leave(ctx)
			if err == nil || !errors.Is(err, bucketfs.ErrNoJournal) {
				if err != nil {
					klog.ErrorS(err, "left a mount to the keeper", "target", t)
				}
				n++
				continue
			}
		}
		klog.ErrorS(err, "cannot leave a mount to the keeper: it ends with this process", "target", t)
		s.unkeep(t, false)
		if dir, err := s.privateDir(Builtin, t); err == nil {
			forgetSaved(dir) // nothing to recover
		}
	}
	if n > 0 {
		klog.InfoS("left built-in mounts to the keeper: the next mounter serves them on", "mounts", n)
	}
	s.keeper.close()
}
