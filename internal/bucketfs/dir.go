package bucketfs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirNode is a directory: the keys under "<prefix><path>/". It exists in
// the store as a marker object "<path>/" (made by mkdir) or implicitly,
// while any key lies under it.
type dirNode struct {
	fs.Inode
	noXattrs
	fsys *bfs
}

var (
	_ fs.NodeLookuper   = (*dirNode)(nil)
	_ fs.NodeReaddirer  = (*dirNode)(nil)
	_ fs.NodeGetattrer  = (*dirNode)(nil)
	_ fs.NodeSetattrer  = (*dirNode)(nil)
	_ fs.NodeCreater    = (*dirNode)(nil)
	_ fs.NodeMkdirer    = (*dirNode)(nil)
	_ fs.NodeRmdirer    = (*dirNode)(nil)
	_ fs.NodeUnlinker   = (*dirNode)(nil)
	_ fs.NodeRenamer    = (*dirNode)(nil)
	_ fs.NodeStatfser   = (*dirNode)(nil)
	_ fs.NodeLinker     = (*dirNode)(nil)
	_ fs.NodeSymlinker  = (*dirNode)(nil)
	_ fs.NodeMknoder    = (*dirNode)(nil)
	_ fs.NodeGetxattrer = (*dirNode)(nil)
	_ fs.NodeSetxattrer = (*dirNode)(nil)
)

// hides reports the name Config.Hidden at the top of the mount.
func (d *dirNode) hides(name string) bool {
	return d.fsys.cfg.Hidden != "" && name == d.fsys.cfg.Hidden && d.IsRoot()
}

func (d *dirNode) key() string { return d.fsys.keyOf(d.Path(nil), true) }

func (d *dirNode) childKey(name string) string { return d.key() + name }

func (d *dirNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.dirAttr(&out.Attr)
	return 0
}

// Setattr accepts what changes nothing: chmod or chown to the mount's own
// values, and times (S3 keeps no directory times).
func (d *dirNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := d.fsys.checkOwnerMode(in, uint32(d.fsys.cfg.DirMode)); e != 0 {
		return e
	}
	d.fsys.dirAttr(&out.Attr)
	return 0
}

func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	d.fsys.statfs(out)
	return 0
}

// find says what name is in this directory: from a fresh cached listing if
// there is one, else from the store.
func (d *dirNode) find(ctx context.Context, name string) (entry, syscall.Errno) {
	if d.hides(name) {
		return entry{}, syscall.ENOENT
	}
	if e, found, fresh := d.fsys.cache.lookup(d.key(), name); fresh {
		if !found {
			return entry{}, syscall.ENOENT
		}
		return e, 0
	}
	key := d.childKey(name)
	if len(key)+1 > maxKeyLen {
		return entry{}, syscall.ENAMETOOLONG
	}
	if d.fsys.cache.relistNow(d.key()) {
		entries, err := d.relist(ctx, d.pendingFiles())
		if err != nil {
			return entry{}, logErr("list", d.key(), err)
		}
		e, found := entries[name]
		if !found {
			return entry{}, syscall.ENOENT
		}
		return e, 0
	}
	e, err := d.fsys.st.stat(ctx, key)
	if err != nil {
		return entry{}, logErr("stat", key, err)
	}
	return e, 0
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if d.fsys.restoring != nil { // a successor rebuilding the kernel's nodes: no request
		return d.restore(ctx, name, out)
	}
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	// A file this mount is writing, and has not stored yet, is found here
	// first: the store does not know it.
	if ch := d.GetChild(name); ch != nil {
		if fn, ok := ch.Operations().(*fileNode); ok && fn.pending() {
			fn.attr(&out.Attr)
			return ch, 0
		}
	}
	// A file closed here whose inode the kernel has forgotten may still
	// be going up: once it is there, the listing has it.
	d.fsys.waitPuts(d.childKey(name))
	e, errno := d.find(ctx, name)
	if errno != 0 {
		return nil, errno
	}
	return d.child(ctx, name, e, out), 0
}

// child returns the inode for name, reusing the one the kernel knows if
// it is still of the same kind, so a file's open state stays with it.
func (d *dirNode) child(ctx context.Context, name string, e entry, out *fuse.EntryOut) *fs.Inode {
	if ch := d.GetChild(name); ch != nil {
		switch n := ch.Operations().(type) {
		case *dirNode:
			if e.dir {
				d.fsys.dirAttr(&out.Attr)
				return ch
			}
		case *fileNode:
			if !e.dir {
				n.refresh(e)
				n.attr(&out.Attr)
				return ch
			}
		}
	}
	if e.dir {
		d.fsys.dirAttr(&out.Attr)
		return d.NewInode(ctx, &dirNode{fsys: d.fsys}, d.fsys.stable(syscall.S_IFDIR))
	}
	n := &fileNode{fsys: d.fsys, size: e.size, mtime: e.mtime}
	n.attr(&out.Attr)
	return d.NewInode(ctx, n, d.fsys.stable(syscall.S_IFREG))
}

func (d *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	key := d.key()
	pend := d.pendingFiles()
	entries, ok := d.fsys.cache.get(key)
	if !ok {
		var err error
		if entries, err = d.relist(ctx, pend); err != nil {
			return nil, logErr("list", key, err)
		}
	}
	list := make([]fuse.DirEntry, 0, len(entries)+1)
	for name, e := range entries {
		if d.hides(name) {
			continue
		}
		mode := uint32(syscall.S_IFREG)
		if e.dir {
			mode = syscall.S_IFDIR
		}
		list = append(list, fuse.DirEntry{Name: name, Mode: mode})
	}
	for name := range pend {
		if _, listed := entries[name]; !listed {
			list = append(list, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG})
		}
	}
	return fs.NewListDirStream(list), 0
}

// pendingFiles returns the files written here and not stored yet. Taken
// before a listing, a background PUT that ends meanwhile is then in one or
// the other.
func (d *dirNode) pendingFiles() map[string]entry {
	pend := map[string]entry{}
	for name, ch := range d.Children() {
		if fn, ok := ch.Operations().(*fileNode); ok && fn.pending() {
			fn.mu.Lock()
			pend[name] = entry{size: fn.size, mtime: fn.mtime}
			fn.mu.Unlock()
		}
	}
	return pend
}

// relist lists the directory from the store and caches the listing with
// pend, the files pending here, in it: the listing answers lookups after
// their PUTs end, and may predate those.
func (d *dirNode) relist(ctx context.Context, pend map[string]entry) (map[string]entry, error) {
	entries, err := d.fsys.st.list(ctx, d.key())
	if err != nil {
		return nil, err
	}
	for name, e := range pend {
		if _, listed := entries[name]; !listed {
			entries[name] = e
		}
	}
	d.fsys.cache.put(d.key(), entries)
	return entries, nil
}

func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if d.fsys.cfg.ReadOnly {
		return nil, nil, 0, syscall.EROFS
	}
	if len(d.childKey(name))+1 > maxKeyLen {
		return nil, nil, 0, syscall.ENAMETOOLONG
	}
	if d.hides(name) {
		return nil, nil, 0, syscall.EPERM
	}
	// Nothing is stored until the file is flushed: a new file costs one
	// PUT, with its data.
	n := &fileNode{fsys: d.fsys, dirty: true, mtime: time.Now()}
	ch := d.NewInode(ctx, n, d.fsys.stable(syscall.S_IFREG))
	n.attr(&out.Attr)
	h, _, errno := n.open(flags)
	return ch, h, 0, errno
}

func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if d.fsys.cfg.ReadOnly {
		return nil, syscall.EROFS
	}
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	key := d.childKey(name) + "/"
	if len(key) > maxKeyLen {
		return nil, syscall.ENAMETOOLONG
	}
	if d.hides(name) {
		return nil, syscall.EPERM
	}
	if err := d.fsys.st.mark(ctx, key); err != nil {
		return nil, logErr("mkdir", key, err)
	}
	d.fsys.cache.set(d.key(), name, &entry{dir: true})
	d.fsys.cache.put(key, map[string]entry{}) // new, so empty: its lookups need no request
	d.fsys.dirAttr(&out.Attr)
	return d.NewInode(ctx, &dirNode{fsys: d.fsys}, d.fsys.stable(syscall.S_IFDIR)), 0
}

// Rmdir removes the marker of an empty directory; ENOTEMPTY if any other
// key lies under it or a file is being written in it.
func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if d.fsys.cfg.ReadOnly {
		return syscall.EROFS
	}
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	key := d.childKey(name) + "/"
	if ch := d.GetChild(name); ch != nil {
		for _, gc := range ch.Children() {
			if fn, ok := gc.Operations().(*fileNode); ok && fn.pending() {
				return syscall.ENOTEMPTY
			}
		}
	}
	keys, err := d.fsys.st.firstKeys(ctx, key, 2)
	if err != nil {
		return logErr("rmdir", key, err)
	}
	for _, k := range keys {
		if k != key {
			return syscall.ENOTEMPTY
		}
	}
	if len(keys) == 0 {
		return syscall.ENOENT
	}
	if err := d.fsys.st.remove(ctx, key); err != nil {
		return logErr("rmdir", key, err)
	}
	d.fsys.cache.set(d.key(), name, nil)
	d.fsys.cache.drop(key)
	return 0
}

func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if d.fsys.cfg.ReadOnly {
		return syscall.EROFS
	}
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	key := d.childKey(name)
	d.fsys.waitPuts(key) // a PUT landing after the DELETE would bring it back
	var size int64
	if ch := d.GetChild(name); ch != nil {
		fn, ok := ch.Operations().(*fileNode)
		if !ok {
			return syscall.EISDIR
		}
		size = fn.unlinked()
	} else {
		e, errno := d.find(ctx, name)
		if errno != 0 {
			return errno
		}
		if e.dir {
			return syscall.EISDIR
		}
		size = e.size
	}
	if err := d.fsys.st.remove(ctx, key); err != nil {
		return logErr("unlink", key, err)
	}
	d.fsys.reserve(-size)
	d.fsys.cache.set(d.key(), name, nil)
	return 0
}

// Unsupported: S3 has no hard links, symlinks, device nodes or fifos,
// and we keep no extended attributes. The errnos are the ones link(2),
// symlink(2) and mknod(2) document for a filesystem that does not support
// the operation.

func (d *dirNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// noXattrs answers extended attribute calls for every node: there are
// none (ENODATA), and none can be set (ENOTSUP).
type noXattrs struct{}

func (noXattrs) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

func (noXattrs) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) { return 0, 0 }

func (noXattrs) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOTSUP
}

func (noXattrs) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.ENODATA
}

func (b *bfs) dirAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFDIR | uint32(b.cfg.DirMode)
	a.Nlink = 2
	a.Owner = fuse.Owner{Uid: b.cfg.UID, Gid: b.cfg.GID}
	a.Blksize = 4096
}

// checkOwnerMode refuses with EPERM a chmod or chown to other values than
// the mount's: modes and owners are mount options, not stored per file.
func (b *bfs) checkOwnerMode(in *fuse.SetAttrIn, perm uint32) syscall.Errno {
	if m, ok := in.GetMode(); ok && m&0o7777 != perm {
		return syscall.EPERM
	}
	if u, ok := in.GetUID(); ok && u != b.cfg.UID {
		return syscall.EPERM
	}
	if g, ok := in.GetGID(); ok && g != b.cfg.GID {
		return syscall.EPERM
	}
	return 0
}
