package bucketfs

import (
	"context"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
)

// Rename copies on the server and deletes the source: S3 has no rename.
// A directory is renamed key by key (every object under it copied, then
// the old ones deleted), so it is not atomic and costs two requests per
// object; a crash halfway leaves both trees, the new one complete up to
// where it stopped. RENAME_EXCHANGE is EINVAL (unsupported flag).
func (d *dirNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if d.fsys.cfg.ReadOnly {
		return syscall.EROFS
	}
	const renameNoreplace = 1 // RENAME_EXCHANGE (2) and RENAME_WHITEOUT (4) are unsupported
	if flags&^renameNoreplace != 0 {
		return syscall.EINVAL
	}
	np, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	ctx, cancel := ctxFor(ctx)
	defer cancel()
	// A rename copies what the store has: let this mount's background
	// PUTs land first (the source, the target, or files in a directory).
	d.fsys.waitPuts("")
	src, e := d.find(ctx, name)
	if ch := d.GetChild(name); ch != nil {
		if fn, ok := ch.Operations().(*fileNode); ok && fn.pending() {
			src, e = entry{}, 0 // being written here, maybe not stored yet
		}
	}
	if e != 0 {
		return e
	}
	dst, e := np.find(ctx, newName)
	dstExists := e == 0
	if e != 0 && e != syscall.ENOENT {
		return e
	}
	if dstExists && flags&renameNoreplace != 0 {
		return syscall.EEXIST
	}
	if len(np.childKey(newName))+1 > maxKeyLen {
		return syscall.ENAMETOOLONG
	}
	if src.dir {
		return d.renameDir(ctx, name, np, newName, dst, dstExists)
	}
	if dstExists && dst.dir {
		return syscall.EISDIR
	}
	return d.renameFile(ctx, name, np, newName, dst, dstExists)
}

func (d *dirNode) renameFile(ctx context.Context, name string, np *dirNode, newName string, dst entry, dstExists bool) syscall.Errno {
	from, to := d.childKey(name), np.childKey(newName)
	var fn *fileNode
	if ch := d.GetChild(name); ch != nil {
		fn, _ = ch.Operations().(*fileNode)
	}
	size := int64(-1)
	if fn != nil {
		// Store what is being written first: the copy is of the object.
		fn.mu.Lock()
		defer fn.mu.Unlock()
		if e := fn.commitLocked(ctx); e != 0 {
			return e
		}
		size = fn.size
	}
	if size < 0 {
		e, errno := d.find(ctx, name)
		if errno != 0 {
			return errno
		}
		size = e.size
	}
	if err := d.fsys.st.copy(ctx, from, to, size); err != nil {
		return logErr("rename: copy", from, err)
	}
	if err := d.fsys.st.remove(ctx, from); err != nil {
		return logErr("rename: remove", from, err)
	}
	if dstExists {
		// The object renamed over is gone; it no longer counts.
		dsize := dst.size
		if ch := np.GetChild(newName); ch != nil {
			if old, ok := ch.Operations().(*fileNode); ok && old != fn {
				dsize = old.unlinked()
			}
		}
		d.fsys.reserve(-dsize)
	}
	d.fsys.cache.set(d.key(), name, nil)
	d.fsys.cache.set(np.key(), newName, &entry{size: size, mtime: time.Now()}) // a copy is a new object
	return 0
}

func (d *dirNode) renameDir(ctx context.Context, name string, np *dirNode, newName string, dst entry, dstExists bool) syscall.Errno {
	from, to := d.childKey(name)+"/", np.childKey(newName)+"/"
	if dstExists {
		if !dst.dir {
			return syscall.ENOTDIR
		}
		keys, err := d.fsys.st.firstKeys(ctx, to, 2)
		if err != nil {
			return logErr("rename: list", to, err)
		}
		for _, k := range keys {
			if k != to {
				return syscall.ENOTEMPTY
			}
		}
	}
	// Files streaming under the directory are bound to their old keys:
	// store them first.
	if ch := d.GetChild(name); ch != nil {
		if e := commitTree(ctx, ch); e != 0 {
			return e
		}
	}
	var moved []string
	err := d.fsys.st.walk(ctx, from, func(key string, size int64) error {
		newKey := to + strings.TrimPrefix(key, from)
		var err error
		if strings.HasSuffix(key, "/") {
			err = d.fsys.st.mark(ctx, newKey) // markers are made, not copied (versitygw refuses)
		} else {
			err = d.fsys.st.copy(ctx, key, newKey, size)
		}
		if err != nil {
			return err
		}
		moved = append(moved, key)
		return nil
	})
	if err != nil {
		return logErr("rename: copy", from, err)
	}
	for _, key := range moved {
		if err := d.fsys.st.remove(ctx, key); err != nil {
			return logErr("rename: remove", key, err)
		}
	}
	d.fsys.cache.drop(from)
	d.fsys.cache.drop(to)
	d.fsys.cache.set(d.key(), name, nil)
	d.fsys.cache.set(np.key(), newName, &entry{dir: true})
	return 0
}

// commitTree stores every dirty file under the inode.
func commitTree(ctx context.Context, in *fs.Inode) syscall.Errno {
	for _, ch := range in.Children() {
		switch n := ch.Operations().(type) {
		case *fileNode:
			n.mu.Lock()
			e := n.commitLocked(ctx)
			n.mu.Unlock()
			if e != 0 {
				return e
			}
		case *dirNode:
			if e := commitTree(ctx, ch); e != 0 {
				return e
			}
		}
	}
	return 0
}
