package mounter

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// The keeper (`volplug keeper`): a small process that does nothing but hold a duplicate of
// each built-in mount's /dev/fuse fd. The kernel keeps a FUSE connection
// while any process holds its fd, so when the mounter is killed (SIGKILL,
// OOM) its mounts do not end: requests wait in the kernel's queue until a
// new mounter takes the fds back (Server.RecoverKept) and serves on. The
// mounter hands each new fd over (SCM_RIGHTS, fdconn.go) and says when a
// mount goes. Each mounter keeps one connection open for its life: while
// none is open and the keeper holds fds, a grace period runs; when it
// ends with no mounter back, the keeper aborts those connections by
// closing its fds: with the mounter gone they are the last ones, and the
// kernel aborts a connection when its last fd closes. Processes waiting on
// them fail (ECONNABORTED, then ENOTCONN) instead of hanging, and the node
// plugin finds dead mounts it knows how to clean up. Not through
// /sys/fs/fuse/connections/N/abort: N is the number of the mount's device,
// which the kernel gives to the next mount once this one is gone, and an
// fd the keeper holds may be of a connection that is gone already (a
// mounter killed between an unmount and telling the keeper): writing to N
// could abort someone else's mount, closing the fd cannot.

// DefaultKeeperGrace is how long a keeper waits for a mounter to come
// back before it aborts the mounts it holds.
const DefaultKeeperGrace = 2 * time.Minute

// keeperMsg is one message between a mounter and its keeper.
type keeperMsg struct {
	Op     string `json:"op"` // take, hold, drop, ping; answers: ok, fd, end, error
	Target string `json:"target,omitempty"`
	Conn   uint64 `json:"conn,omitempty"`  // FUSE connection number, for the logs
	Abort  bool   `json:"abort,omitempty"` // drop: the mount could not be recovered (logged)
	Error  string `json:"error,omitempty"`
}

type keptFD struct {
	f    *os.File
	conn uint64
}

// Keeper holds /dev/fuse fds for mounters.
type Keeper struct {
	grace time.Duration

	mu       sync.Mutex
	held     map[string]keptFD // by target
	sessions int
	timer    *time.Timer
}

// NewKeeper returns a keeper that aborts what it holds grace after the
// last mounter left.
func NewKeeper(grace time.Duration) *Keeper {
	return &Keeper{grace: grace, held: map[string]keptFD{}}
}

// Serve answers mounters on l until ctx ends. At the end, every fd held
// is closed: a mount whose mounter is gone too ends then.
func (k *Keeper) Serve(ctx context.Context, l *net.UnixListener) error {
	go func() { <-ctx.Done(); l.Close() }()
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		k.mu.Lock()
		for t, h := range k.held {
			h.f.Close()
			delete(k.held, t)
		}
		k.mu.Unlock()
	}()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("keeper: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() { <-ctx.Done(); c.Close() }()
			k.session(c)
		}()
	}
}

// session serves one mounter's connection.
func (k *Keeper) session(c *net.UnixConn) {
	defer c.Close()
	k.mu.Lock()
	k.sessions++
	if k.timer != nil {
		k.timer.Stop()
		k.timer = nil
	}
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.sessions--
		if k.sessions == 0 && len(k.held) > 0 {
			klog.InfoS("keeper: no mounter; aborting its mounts unless one comes back", "mounts", len(k.held), "grace", k.grace)
			k.timer = time.AfterFunc(k.grace, k.expire)
		}
	}()
	fc := fdConn{c}
	for {
		var m keeperMsg
		f, err := fc.recv(&m)
		if err != nil {
			return // the mounter exited (or was killed)
		}
		if err := k.do(fc, &m, f); err != nil {
			klog.ErrorS(err, "keeper: a mounter's request", "op", m.Op, "target", m.Target)
			if fc.send(keeperMsg{Op: "error", Error: err.Error()}, nil) != nil {
				return
			}
		}
	}
}

func (k *Keeper) do(fc fdConn, m *keeperMsg, f *os.File) error {
	switch m.Op {
	case "hold":
		if f == nil || !filepath.IsAbs(m.Target) {
			closeFile(f)
			return fmt.Errorf("hold: want an fd and an absolute target")
		}
		k.mu.Lock()
		if old, ok := k.held[m.Target]; ok {
			old.f.Close()
		}
		k.held[m.Target] = keptFD{f: f, conn: m.Conn}
		k.mu.Unlock()
		klog.InfoS("keeper: holding", "target", m.Target, "conn", m.Conn)
		return fc.send(keeperMsg{Op: "ok"}, nil)
	case "drop":
		closeFile(f)
		k.mu.Lock()
		h, ok := k.held[m.Target]
		delete(k.held, m.Target)
		k.mu.Unlock()
		if ok {
			h.f.Close() // the last fd, unless a mounter serves it: aborted
			klog.InfoS("keeper: dropped", "target", m.Target, "abort", m.Abort)
		}
		return fc.send(keeperMsg{Op: "ok"}, nil)
	case "ping":
		closeFile(f)
		return fc.send(keeperMsg{Op: "ok"}, nil)
	case "take":
		closeFile(f)
		k.mu.Lock()
		held := make(map[string]keptFD, len(k.held))
		for t, h := range k.held {
			held[t] = h
		}
		k.mu.Unlock()
		for t, h := range held {
			if err := fc.send(keeperMsg{Op: "fd", Target: t, Conn: h.conn}, h.f); err != nil {
				return err
			}
		}
		return fc.send(keeperMsg{Op: "end"}, nil)
	default:
		closeFile(f)
		return fmt.Errorf("unknown op %q", m.Op)
	}
}

// expire aborts every connection held: no mounter came back in time.
func (k *Keeper) expire() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sessions > 0 {
		return
	}
	for t, h := range k.held {
		h.f.Close() // the last fd: the kernel aborts the connection
		delete(k.held, t)
		klog.InfoS("keeper: no mounter came back; the mount is aborted", "target", t, "conn", h.conn)
	}
}

// Held lists the targets held (for tests and logs).
func (k *Keeper) Held() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]string, 0, len(k.held))
	for t := range k.held {
		out = append(out, t)
	}
	return out
}

// ListenKeeper makes the keeper's unix socket at path (0600).
func ListenKeeper(path string) (*net.UnixListener, error) {
	l, err := Listen(path)
	if err != nil {
		return nil, err
	}
	return l.(*net.UnixListener), nil
}

// keeperClient is a mounter's connection to its keeper; a mounter keeps
// one for its life (the keeper counts it as present while it is open).
type keeperClient struct {
	socket string
	mu     sync.Mutex
	fc     *fdConn
	dials  int // connections made: more than one, and a keeper restarted may hold nothing
}

func dialKeeper(socket string) (*keeperClient, error) {
	k := &keeperClient{socket: socket}
	if err := k.dial(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *keeperClient) dial() error {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: k.socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("keeper at %s: %w", k.socket, err)
	}
	k.fc = &fdConn{c}
	k.dials++
	return nil
}

// ping checks the keeper answers (dialing again if it was restarted) and
// returns how many connections were made so far.
func (k *keeperClient) ping() (int, error) {
	err := k.call(keeperMsg{Op: "ping"}, nil)
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.dials, err
}

// call sends m (with f) and reads the answer, dialing again once if the
// keeper was restarted.
func (k *keeperClient) call(m keeperMsg, f *os.File) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var err error
	for try := 0; try < 2; try++ {
		if k.fc == nil {
			if err = k.dial(); err != nil {
				continue
			}
		}
		var ans keeperMsg
		if err = k.fc.send(m, f); err == nil {
			var got *os.File
			got, err = k.fc.recv(&ans)
			closeFile(got)
		}
		if err == nil {
			if ans.Op == "error" {
				return fmt.Errorf("keeper: %s", ans.Error)
			}
			return nil
		}
		k.fc.c.Close()
		k.fc = nil
	}
	return fmt.Errorf("keeper at %s: %w", k.socket, err)
}

func (k *keeperClient) hold(target string, conn uint64, f *os.File) error {
	return k.call(keeperMsg{Op: "hold", Target: target, Conn: conn}, f)
}

func (k *keeperClient) drop(target string, abort bool) error {
	return k.call(keeperMsg{Op: "drop", Target: target, Abort: abort}, nil)
}

// take returns a duplicate of every fd the keeper holds, by target.
func (k *keeperClient) take() (map[string]keptFD, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fc == nil {
		if err := k.dial(); err != nil {
			return nil, err
		}
	}
	if err := k.fc.send(keeperMsg{Op: "take"}, nil); err != nil {
		return nil, err
	}
	out := map[string]keptFD{}
	for {
		var m keeperMsg
		f, err := k.fc.recv(&m)
		if err != nil {
			for _, h := range out {
				h.f.Close()
			}
			return nil, fmt.Errorf("keeper: %w", err)
		}
		switch m.Op {
		case "fd":
			if f != nil {
				out[m.Target] = keptFD{f: f, conn: m.Conn}
			}
		case "end":
			closeFile(f)
			return out, nil
		default:
			closeFile(f)
			for _, h := range out {
				h.f.Close()
			}
			return nil, fmt.Errorf("keeper: %s", m.Error)
		}
	}
}

func (k *keeperClient) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fc != nil {
		k.fc.c.Close()
		k.fc = nil
	}
}
