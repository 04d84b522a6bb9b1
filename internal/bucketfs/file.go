package bucketfs

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fileNode is a file: one object. Its content lives in one of three
// places: the store (clean), a multipart upload being streamed (a
// sequential write from offset 0), or a local staging file (any other
// write). Flush, fsync and the last close store it.
type fileNode struct {
	fs.Inode
	noXattrs
	fsys *bfs

	mu      sync.Mutex
	size    int64 // the file's size; counted in the usage unless deleted
	mtime   time.Time
	dirty   bool // the store does not have this content yet
	deleted bool // unlinked or renamed over: never stored again
	stream  *stream
	stage   *staged
	opens   int
	up      *asyncPut // the background PUT of a closed file, in flight
	upErr   error     // a failed background PUT, for the next fsync or flush
}

var (
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeWriter    = (*fileNode)(nil)
	_ fs.NodeFlusher   = (*fileNode)(nil)
	_ fs.NodeFsyncer   = (*fileNode)(nil)
	_ fs.NodeReleaser  = (*fileNode)(nil)
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
)

// handle is one open file description.
type handle struct {
	ra    *readAhead
	write bool
	// lost: opened again by a crash's successor (Recover) for a handle
	// that had written since its last fsync; that data died with the
	// server, and the next write, flush or fsync through it fails once
	// with EIO to say so.
	lost atomic.Bool
}

// lostData reports (once) that f's unsynced writes died with a crashed server.
func lostData(f fs.FileHandle) bool {
	h, ok := f.(*handle)
	return ok && h.lost.Load() && h.lost.Swap(false)
}

func (n *fileNode) key() string { return n.fsys.keyOf(n.Path(nil), false) }

// pending says whether the file exists here but perhaps not in the store.
func (n *fileNode) pending() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dirty && !n.deleted
}

// refresh takes the store's size and time, unless this mount is the one
// changing the file.
func (n *fileNode) refresh(e entry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.dirty && n.opens == 0 && n.stage == nil {
		n.size, n.mtime = e.size, e.mtime
	}
}

func (n *fileNode) attr(a *fuse.Attr) {
	n.mu.Lock()
	size, mtime := n.size, n.mtime
	n.mu.Unlock()
	n.fsys.fileAttr(a, size, mtime)
}

func (b *bfs) fileAttr(a *fuse.Attr, size int64, mtime time.Time) {
	a.Mode = syscall.S_IFREG | uint32(b.cfg.FileMode)
	a.Nlink = 1
	a.Size = uint64(size)
	a.Blocks = uint64(size+511) / 512
	a.Blksize = 4096
	a.Owner = fuse.Owner{Uid: b.cfg.UID, Gid: b.cfg.GID}
	a.SetTimes(nil, &mtime, &mtime)
}

func (n *fileNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	return 0
}

// Setattr truncates; chmod and chown only to the mount's values (EPERM
// otherwise); times are accepted and not kept (S3 sets an object's time
// when it is stored).
func (n *fileNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.fsys.checkOwnerMode(in, uint32(n.fsys.cfg.FileMode)); e != 0 {
		return e
	}
	if size, ok := in.GetSize(); ok {
		if n.fsys.cfg.ReadOnly {
			return syscall.EROFS
		}
		ctx, cancel := ctxFor(ctx)
		defer cancel()
		n.mu.Lock()
		e := n.truncateLocked(ctx, int64(size))
		if e == 0 && f == nil {
			// truncate(2), not ftruncate(2): no close will follow to
			// store it, so store it now.
			e = n.commitLocked(ctx)
			if n.opens == 0 {
				n.dropStageLocked()
			}
		}
		n.mu.Unlock()
		if e != 0 {
			return e
		}
	}
	n.attr(&out.Attr)
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return n.open(flags)
}

func (n *fileNode) open(flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if write && n.fsys.cfg.ReadOnly {
		return nil, 0, syscall.EROFS
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if write && flags&syscall.O_TRUNC != 0 {
		if e := n.truncateLocked(context.Background(), 0); e != 0 {
			return nil, 0, e
		}
	}
	n.opens++
	h := &handle{ra: newReadAhead(n.fsys), write: write}
	h.lost.Store(write && n.fsys.openLost)
	return h, 0, 0
}

func (n *fileNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	n.mu.Lock()
	n.waitUpLocked() // the content is going up: read it back once it is there
	if n.stream != nil {
		// Reading what is being streamed: store it first, then read it
		// back like any object.
		if e := n.commitLocked(ctx); e != 0 {
			n.mu.Unlock()
			return nil, e
		}
	}
	size := n.size
	if n.stage != nil {
		defer n.mu.Unlock()
		if off >= size {
			return fuse.ReadResultData(nil), 0
		}
		if int64(len(dest)) > size-off {
			dest = dest[:size-off]
		}
		k, err := n.stage.f.ReadAt(dest, off)
		if err != nil && err != io.EOF {
			return nil, logErr("read staging file", n.key(), err)
		}
		return fuse.ReadResultData(dest[:k]), 0
	}
	if n.dirty { // new, empty, not stored yet
		n.mu.Unlock()
		return fuse.ReadResultData(nil), 0
	}
	key := n.key()
	n.mu.Unlock()
	h, ok := f.(*handle)
	if !ok {
		return nil, syscall.EBADF
	}
	return h.ra.read(ctx, key, size, dest, off)
}

func (n *fileNode) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.fsys.cfg.ReadOnly {
		return 0, syscall.EROFS
	}
	if lostData(f) {
		return 0, syscall.EIO
	}
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.waitUpLocked()
	end := off + int64(len(data))
	if n.stream != nil && off == n.stream.written ||
		n.stream == nil && n.stage == nil && off == 0 && n.size == 0 {
		// Sequential from the start: stream it as parts while it is written.
		if e := n.resizeLocked(end); e != 0 {
			return 0, e
		}
		if n.stream == nil {
			n.stream = newStream(n.fsys, n.key())
		}
		if err := n.stream.write(ctx, data); err != nil {
			n.stream.abort()
			n.stream = nil
			n.resizeLocked(0)
			return 0, logErr("write", n.key(), err)
		}
		n.dirty, n.mtime = true, time.Now()
		return uint32(len(data)), 0
	}
	if e := n.stageLocked(ctx); e != 0 {
		return 0, e
	}
	if end > n.size {
		if e := n.growStageLocked(end); e != 0 {
			return 0, e
		}
	}
	if _, err := n.stage.f.WriteAt(data, off); err != nil {
		return 0, logErr("write staging file", n.key(), err)
	}
	n.dirty, n.mtime = true, time.Now()
	return uint32(len(data)), 0
}

// Flush (every close) stores the file, if the handle may have written: a
// reader closing (a backup agent, tail) must not cut a stream short. A
// small file goes up in the background (see asyncput.go).
func (n *fileNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if lostData(f) {
		return syscall.EIO
	}
	if h, ok := f.(*handle); ok && !h.write {
		return 0
	}
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.takeUpErrLocked()
	if e2 := n.commit(ctx, true); e == 0 {
		e = e2
	}
	return e
}

// Fsync stores the file now, waiting for its background PUT if any, and
// returns that PUT's error.
func (n *fileNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if lostData(f) {
		return syscall.EIO
	}
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.commitLocked(ctx)
}

func (n *fileNode) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if h, ok := f.(*handle); ok {
		h.ra.close()
	}
	ctx, cancel := ctxFor(context.Background())
	defer cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.opens--
	if n.opens > 0 {
		return 0
	}
	// Flush normally stored everything (or queued it); what a writable
	// mmap wrote after the last close lands here.
	e := n.commit(ctx, true)
	if n.stream != nil { // a failed commit
		n.stream.abort()
		n.stream = nil
	}
	n.dropStageLocked()
	return e
}

// truncateLocked sets the size. To zero is cheap (the next write streams
// again); any other size goes through the staging file.
func (n *fileNode) truncateLocked(ctx context.Context, size int64) syscall.Errno {
	n.waitUpLocked()
	if size == n.size {
		return 0
	}
	if size == 0 {
		if n.stream != nil {
			n.stream.abort()
			n.stream = nil
		}
		if n.stage != nil {
			if err := n.stage.f.Truncate(0); err != nil {
				return logErr("truncate staging file", n.key(), err)
			}
			n.fsys.reserveStaging(-n.stage.reserved)
			n.stage.reserved = 0
		}
		n.resizeLocked(0)
		n.dirty, n.mtime = true, time.Now()
		return 0
	}
	if e := n.stageLocked(ctx); e != 0 {
		return e
	}
	if size > n.size {
		if e := n.growStageLocked(size); e != 0 {
			return e
		}
	} else {
		n.resizeLocked(size)
	}
	if err := n.stage.f.Truncate(size); err != nil {
		return logErr("truncate staging file", n.key(), err)
	}
	n.dirty, n.mtime = true, time.Now()
	return 0
}

// resizeLocked sets the size, counting the change in the usage: ENOSPC if
// it would pass the capacity. A deleted file is no longer counted.
func (n *fileNode) resizeLocked(size int64) syscall.Errno {
	if !n.deleted {
		if e := n.fsys.reserve(size - n.size); e != 0 {
			return e
		}
	}
	n.size = size
	return 0
}

// growStageLocked grows a staged file to size: quota first, then the
// staging budget (EFBIG), undoing the first if the second fails.
func (n *fileNode) growStageLocked(size int64) syscall.Errno {
	old := n.size
	if e := n.resizeLocked(size); e != 0 {
		return e
	}
	if size > n.stage.reserved {
		if e := n.fsys.reserveStaging(size - n.stage.reserved); e != 0 {
			n.resizeLocked(old)
			return e
		}
		n.stage.reserved = size
	}
	return 0
}

// stageLocked moves the content into a staging file, for a write that is
// not sequential: a stream is stored first, then the object downloaded.
func (n *fileNode) stageLocked(ctx context.Context) syscall.Errno {
	if n.stage != nil {
		return 0
	}
	if n.stream != nil {
		if e := n.commitLocked(ctx); e != 0 {
			return e
		}
	}
	if e := n.fsys.reserveStaging(n.size); e != 0 {
		return e
	}
	f, err := os.CreateTemp(n.fsys.stagingDir, "stage-")
	if err != nil {
		n.fsys.reserveStaging(-n.size)
		return logErr("create staging file", n.key(), err)
	}
	// Unlinked at once: the data is reachable only through f, and nothing
	// is left on disk if the process dies.
	os.Remove(f.Name())
	st := &staged{f: f, reserved: n.size}
	if n.size > 0 && !n.dirty {
		got, err := n.fsys.st.download(ctx, n.key(), f)
		if err == nil && got != n.size {
			err = io.ErrUnexpectedEOF // changed by someone else meanwhile
		}
		if err != nil {
			st.close(n.fsys)
			return logErr("download for staging", n.key(), err)
		}
	}
	n.stage = st
	return 0
}

func (n *fileNode) dropStageLocked() {
	if n.stage != nil {
		n.stage.close(n.fsys)
		n.stage = nil
	}
}

// commitLocked stores the content if the store does not have it, and
// returns when the store has it.
func (n *fileNode) commitLocked(ctx context.Context) syscall.Errno {
	n.waitUpLocked()
	e := n.takeUpErrLocked()
	if e2 := n.commit(ctx, false); e == 0 {
		e = e2
	}
	return e
}

// takeUpErrLocked returns the error of a failed background PUT once.
func (n *fileNode) takeUpErrLocked() syscall.Errno {
	err := n.upErr
	n.upErr = nil
	return errno(err) // logged when it failed
}

// commit stores the content if the store does not have it. With back, a
// small streamed file (or a new empty one) is queued as a background PUT
// instead. An earlier background PUT is waited for first (unless back:
// nothing can have changed since it was queued, as every change waits
// for it).
func (n *fileNode) commit(ctx context.Context, back bool) syscall.Errno {
	if back && n.up != nil {
		return 0
	}
	n.waitUpLocked()
	if n.deleted {
		if n.stream != nil {
			n.stream.abort()
			n.stream = nil
		}
		n.dirty = false
		return 0
	}
	if !n.dirty {
		return 0
	}
	key := n.key()
	if back && n.stage == nil && (n.stream == nil || n.stream.uploadID == "" && len(n.stream.buf) <= asyncPutMax) {
		var data []byte
		if n.stream != nil {
			data = n.stream.buf
		}
		var dir, name string
		if nm, parent := n.Parent(); parent != nil {
			if d, ok := parent.Operations().(*dirNode); ok {
				dir, name = d.key(), nm
			}
		}
		p, err := n.fsys.putBack(ctx, n, key, dir, name, data)
		if err != nil {
			return logErr("store", key, err) // still dirty: a later flush tries again
		}
		n.stream, n.up = nil, p // dirty until the PUT settles: pending here
		return 0
	}
	var err error
	switch {
	case n.stream != nil:
		err = n.stream.finish(ctx)
		n.stream = nil
		if err != nil {
			// The parts are gone with the aborted upload: the file is
			// what the store still has, and the writer learns of it here.
			n.dirty = false
			return logErr("complete upload", key, err)
		}
	case n.stage != nil:
		err = n.fsys.st.put(ctx, key, io.NewSectionReader(n.stage.f, 0, n.size), n.size)
	default:
		err = n.fsys.st.mark(ctx, key)
	}
	if err != nil {
		return logErr("store", key, err) // still dirty: a later flush tries again
	}
	n.dirty, n.mtime = false, time.Now()
	if name, parent := n.Parent(); parent != nil {
		if d, ok := parent.Operations().(*dirNode); ok {
			n.fsys.cache.set(d.key(), name, &entry{size: n.size, mtime: n.mtime})
		}
	}
	return 0
}

// unlinked marks the file removed and returns the size it counted.
func (n *fileNode) unlinked() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	// A PUT landing after the DELETE would bring the file back.
	n.waitUpLocked()
	if n.deleted {
		return 0
	}
	if n.stream != nil {
		n.stream.abort()
		n.stream = nil
	}
	n.deleted = true
	return n.size
}

// staged is a file's content in a local, unlinked temporary file.
type staged struct {
	f        *os.File
	reserved int64 // bytes of the staging budget it holds
}

func (s *staged) close(b *bfs) {
	s.f.Close()
	b.reserveStaging(-s.reserved)
}
