package bucketfs

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Handing a live mount to another process. The kernel keeps a FUSE
// connection while any process holds its /dev/fuse fd, so the fd can move
// (SCM_RIGHTS) and a new server answer on it, if it answers as the old one
// would have: the same node IDs (bucketfs gives them out itself, see
// bfs.stable, and the kernel table records which the kernel holds, under
// which names, looked up how often), the same file handles, and the same
// protocol settings (the kernel's INIT request, replayed into go-fuse's
// protocol layer). The successor rebuilds go-fuse's tables by calling it as
// the kernel did: one LOOKUP per lookup the kernel holds, answered from
// the state rather than the store, and one OPEN per handle, in handle order
// (go-fuse numbers handles in sequence; gaps are filled with handles
// opened and released again).

// State is what a successor needs to serve a mount on. It travels with
// the mount's /dev/fuse fd.
type State struct {
	Mountpoint string                  `json:"mountpoint"`
	Init       []byte                  `json:"init"` // the kernel's INIT request
	Nodes      map[uint64]KernelNode   `json:"nodes"`
	Handles    map[uint64]KernelHandle `json:"handles"`
	Files      map[uint64]FileState    `json:"files"` // by node ID
	LastIno    uint64                  `json:"lastIno"`
	Used       int64                   `json:"used"`
	Capacity   int64                   `json:"capacity"`
}

// FileState is what a successor must know of a file the kernel holds: its
// content is in the store (Handover stores it first).
type FileState struct {
	Size  int64     `json:"size"`
	Mtime time.Time `json:"mtime"`
	// New: not in the store (created, and its server crashed before
	// storing it): empty, stored at its next close.
	New bool `json:"new,omitempty"`
}

// restoredNode answers a successor's replayed LOOKUP.
type restoredNode struct {
	id      uint64
	dir     bool
	file    FileState
	deleted bool
}

// Handover stops serving between two requests (the kernel queues new ones
// meanwhile), stores what was written and not yet stored (streams
// completed, staged files uploaded, background PUTs ended), and returns a
// duplicate of the /dev/fuse fd and the state a successor resumes with
// (Resume). The caller then either passes both on and calls HandedOver, or
// calls Continue to serve on here. A file that cannot be stored fails the
// handover (Continue, and the data is still here).
func (s *Server) Handover(ctx context.Context) (*os.File, *State, error) {
	if s.conn == nil {
		return nil, nil, fmt.Errorf("%s is served by go-fuse's own loop (not root): it cannot be handed over", s.mountpoint)
	}
	s.conn.stop()
	if err := s.storeAll(ctx); err != nil {
		s.conn.run()
		return nil, nil, err
	}
	fd, err := dupFile(s.conn.dev)
	if err != nil {
		s.conn.run()
		return nil, nil, fmt.Errorf("dup /dev/fuse: %w", err)
	}
	nodes, handles := s.conn.table.snapshot()
	b := s.fsys
	st := &State{
		Mountpoint: s.mountpoint,
		Init:       s.conn.initRequest(),
		Nodes:      nodes,
		Handles:    handles,
		Files:      map[uint64]FileState{},
		LastIno:    b.lastIno.Load(),
	}
	st.Used, st.Capacity = s.Usage()
	walk(&s.root.Inode, func(in *fs.Inode) {
		if n, ok := in.Operations().(*fileNode); ok {
			n.mu.Lock()
			st.Files[in.StableAttr().Ino] = FileState{Size: n.size, Mtime: n.mtime}
			n.mu.Unlock()
		}
	})
	return os.NewFile(uintptr(fd), "/dev/fuse"), st, nil
}

// HandedOver ends this server once a successor holds the fd: this
// process's fd is closed, the mount is left alone, Wait returns.
func (s *Server) HandedOver() {
	s.conn.table.stopJournal(false) // the successor's now
	s.conn.end()
}

// Continue serves on after a handover that did not happen.
func (s *Server) Continue() {
	if p := s.fsys.cfg.JournalPath; p != "" {
		// A successor that gave up may have rewritten the file.
		if err := s.conn.table.journalTo(p, s.fsys.lastIno.Load()); err != nil {
			klog.ErrorS(err, "bucketfs: journal: a crash of this server will end its mount")
		}
	}
	s.conn.run()
}

// storeAll stores every file written and not stored yet, and waits for the
// background PUTs.
func (s *Server) storeAll(ctx context.Context) error {
	var failed error
	walk(&s.root.Inode, func(in *fs.Inode) {
		n, ok := in.Operations().(*fileNode)
		if !ok || failed != nil {
			return
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.dirty && !n.deleted || n.up != nil {
			if e := n.commitLocked(ctx); e != 0 {
				failed = fmt.Errorf("store %s before handover: %w", n.key(), e)
			}
		}
	})
	s.fsys.waitPuts("")
	return failed
}

// walk calls f for every inode under (and with) root.
func walk(root *fs.Inode, f func(*fs.Inode)) {
	f(root)
	for _, ch := range root.Children() {
		walk(ch, f)
	}
}

// Resume prepares to serve a mount handed over by a predecessor: fd is its
// /dev/fuse (owned by the server from here on), st what Handover returned,
// cfg the Config it was mounted with (keys may be newer). Nothing is read
// from the kernel until Start; Discard gives the mount up instead (the
// predecessor, which still holds the fd, serves on).
func Resume(ctx context.Context, fd int, cfg Config, st *State) (*Server, error) {
	return resume(ctx, fd, cfg, st, false)
}

// resume is Resume, or Recover's end when crashed.
func resume(ctx context.Context, fd int, cfg Config, st *State, crashed bool) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	b, err := newBFS(cfg)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	b.used, b.capacity = st.Used, st.Capacity
	b.lastIno.Store(max(st.LastIno, 1)) // 1 is the root, given out or not
	if err := b.makeStagingDir(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	s := &Server{fsys: b, root: &dirNode{fsys: b}, mountpoint: st.Mountpoint, done: make(chan struct{}), resend: crashed}
	opts := b.options()
	raw := fs.NewNodeFS(s.root, opts)
	c, err := newConn(fd, fuse.NewProtocolServer(raw, &opts.MountOptions), newKernelTable())
	if err != nil {
		unix.Close(fd)
		os.RemoveAll(b.stagingDir)
		return nil, err
	}
	s.conn = c
	if err := s.replay(raw, st); err != nil {
		c.dev.Close()
		os.RemoveAll(b.stagingDir)
		return nil, fmt.Errorf("resume %s: %w", st.Mountpoint, err)
	}
	c.table.load(st.Nodes, st.Handles)
	c.table.setInit(st.Init)
	s.init = st.Init
	if cfg.JournalPath != "" {
		if err := c.table.journalTo(cfg.JournalPath, st.LastIno); err != nil {
			s.Discard()
			return nil, fmt.Errorf("resume %s: %w", st.Mountpoint, err)
		}
	}
	return s, nil
}

// Start serves a resumed mount.
func (s *Server) Start() error {
	if s.resend {
		// The kernel moves the requests the dead server had read and not
		// answered back to its queue: this loop reads them again.
		if err := notifyResend(s.conn.dev); err != nil {
			s.Discard()
			return fmt.Errorf("recover %s: %w", s.mountpoint, err)
		}
	}
	nodes := len(s.conn.table.nodes) // before the loop starts changing the table
	if err := s.conn.start(s.init); err != nil {
		s.Discard()
		return fmt.Errorf("resume %s: %w", s.mountpoint, err)
	}
	go s.waitEnd()
	klog.InfoS("bucketfs resumed", "bucket", s.fsys.cfg.Bucket, "prefix", s.fsys.cfg.Prefix,
		"mountpoint", s.mountpoint, "nodes", nodes)
	return nil
}

// Discard gives up a resumed mount that was not started.
func (s *Server) Discard() {
	s.conn.table.stopJournal(false)
	s.conn.dev.Close()
	os.RemoveAll(s.fsys.stagingDir)
}

// detachedName is the name a node in no directory is looked up by while
// replaying (a NUL: no real name has one), under the root, which forgets
// it at once.
func detachedName(id uint64) string { return "\x00" + strconv.FormatUint(id, 10) }

// replay rebuilds go-fuse's node and handle tables as the kernel has them.
func (s *Server) replay(raw fuse.RawFileSystem, st *State) error {
	b := s.fsys
	children := map[uint64][]uint64{}
	for id, n := range st.Nodes {
		if id != 1 && n.Parent != 0 {
			children[n.Parent] = append(children[n.Parent], id)
		}
	}
	// Parents first: breadth first from the root. What is not reached is
	// in no directory the kernel still holds.
	b.restoring = map[nameKey]restoredNode{}
	defer func() { b.restoring = nil }()
	var order []uint64
	reached := map[uint64]bool{1: true}
	for q := []uint64{1}; len(q) > 0; q = q[1:] {
		kids := children[q[0]]
		sort.Slice(kids, func(i, j int) bool { return kids[i] < kids[j] })
		for _, id := range kids {
			if !reached[id] {
				reached[id] = true
				order = append(order, id)
				q = append(q, id)
			}
		}
	}
	var detached []uint64
	for id := range st.Nodes {
		if id != 1 && !reached[id] {
			detached = append(detached, id)
		}
	}
	sort.Slice(detached, func(i, j int) bool { return detached[i] < detached[j] })
	key := func(id uint64, n KernelNode) nameKey {
		if reached[id] {
			return nameKey{n.Parent, n.Name}
		}
		return nameKey{1, detachedName(id)}
	}
	for id, n := range st.Nodes {
		f, known := st.Files[id]
		b.restoring[key(id, n)] = restoredNode{id: id, dir: n.Dir, file: f, deleted: !n.Dir && (!known || !reached[id])}
	}
	for _, id := range append(order, detached...) {
		n := st.Nodes[id]
		k := key(id, n)
		for i := uint64(0); i < n.Lookups; i++ {
			var out fuse.EntryOut
			if code := raw.Lookup(nil, &fuse.InHeader{NodeId: k.parent}, k.name, &out); !code.Ok() || out.NodeId != id {
				return fmt.Errorf("replay lookup of node %d (%q in %d): %v, got node %d", id, n.Name, n.Parent, code, out.NodeId)
			}
		}
		if !reached[id] {
			s.root.RmChild(k.name)
		}
	}
	// Handles, in order, gaps filled and released after.
	fhs := make([]uint64, 0, len(st.Handles))
	for fh := range st.Handles {
		fhs = append(fhs, fh)
	}
	sort.Slice(fhs, func(i, j int) bool { return fhs[i] < fhs[j] })
	var fillers []uint64
	next := uint64(1)
	for _, fh := range fhs {
		for ; next <= fh; next++ {
			var out fuse.OpenOut
			h, real := st.Handles[next], next == fh
			var code fuse.Status
			switch {
			case !real:
				code = raw.OpenDir(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: 1}}, &out)
				fillers = append(fillers, next)
			case h.Dir:
				code = raw.OpenDir(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: h.Node}, Flags: h.Flags}, &out)
			default:
				flags := h.Flags &^ (syscall.O_TRUNC | syscall.O_CREAT | syscall.O_EXCL)
				b.openLost = h.Dirty && s.resend
				code = raw.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: h.Node}, Flags: flags}, &out)
				b.openLost = false
			}
			if !code.Ok() || out.Fh != next {
				return fmt.Errorf("replay open of handle %d (node %d): %v, got handle %d", next, h.Node, code, out.Fh)
			}
		}
	}
	for _, fh := range fillers {
		raw.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: 1}, Fh: fh})
	}
	return nil
}

// restore answers a replayed LOOKUP from the predecessor's state.
func (d *dirNode) restore(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	r, ok := d.fsys.restoring[nameKey{d.StableAttr().Ino, name}]
	if !ok {
		return nil, syscall.ENOENT
	}
	if ch := d.GetChild(name); ch != nil && ch.StableAttr().Ino == r.id {
		if r.dir {
			d.fsys.dirAttr(&out.Attr)
		} else {
			ch.Operations().(*fileNode).attr(&out.Attr)
		}
		return ch, 0
	}
	if r.dir {
		d.fsys.dirAttr(&out.Attr)
		return d.NewInode(ctx, &dirNode{fsys: d.fsys}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: r.id}), 0
	}
	n := &fileNode{fsys: d.fsys, size: r.file.Size, mtime: r.file.Mtime, deleted: r.deleted, dirty: r.file.New && !r.deleted}
	n.attr(&out.Attr)
	return d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: r.id}), 0
}
