package bucketfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/minio/minio-go/v7"
	"golang.org/x/sys/unix"
)

// Serving on after the server crashed. A keeper process holds a duplicate
// of the mount's /dev/fuse fd, so the kernel keeps the connection (and
// queues requests) while no server runs; the dead server journaled its
// kernel table (journal.go). A successor gets the fd back, reads the
// journal, asks the store for the files' sizes (the dead server's memory
// is gone; what was stored is what there is), rebuilds go-fuse's tables as
// Resume does, and asks the kernel to resend what the dead server had read
// and not answered (FUSE_NOTIFY_RESEND, Linux 6.9). What cannot come back:
// data written and not yet stored (a handle that wrote since its last
// fsync fails its next write, flush or fsync once with EIO), and files
// closed without fsync whose background PUT had not finished.

// notifyResend is FUSE_NOTIFY_RESEND (include/uapi/linux/fuse.h): a
// notification (unique 0) whose error field is the code.
const notifyResendCode = 7

// uniqueResend marks a request the kernel sends again (FUSE_UNIQUE_RESEND).
const uniqueResend = uint64(1) << 63

// ErrNoResend is returned by Start when the kernel cannot resend (before
// Linux 6.9): requests the dead server had read would wait forever, so the
// mount cannot be recovered.
var ErrNoResend = fmt.Errorf("the kernel cannot resend requests (FUSE_NOTIFY_RESEND needs Linux 6.9)")

func notifyResend(dev *os.File) error {
	var b [16]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))           // len
	binary.LittleEndian.PutUint32(b[4:], uint32(notifyResendCode)) // error: the notification code
	if _, err := dev.Write(b[:]); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return ErrNoResend
		}
		return fmt.Errorf("FUSE_NOTIFY_RESEND: %w", err)
	}
	return nil
}

// Recover prepares to serve a mount whose server died: fd is its
// /dev/fuse (from a keeper; owned by the server from here on), cfg the
// Config it was mounted with, with the same JournalPath. Start serves it;
// Discard gives it up.
func Recover(ctx context.Context, fd int, cfg Config, mountpoint string) (*Server, error) {
	if cfg.JournalPath == "" {
		unix.Close(fd)
		return nil, fmt.Errorf("recover %s: no journal", mountpoint)
	}
	st, err := ReadJournal(cfg.JournalPath)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("recover %s: %w", mountpoint, err)
	}
	st.Mountpoint = mountpoint
	full, err := cfg.withDefaults()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := recoverFiles(ctx, full, st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("recover %s: %w", mountpoint, err)
	}
	// The dead server's staging files: their content was either stored
	// (fsync, close) or is lost; the handles say which (Dirty).
	if old, _ := filepath.Glob(filepath.Join(full.StagingDir, "bucketfs-*")); len(old) > 0 {
		for _, d := range old {
			os.RemoveAll(d)
		}
	}
	return resume(ctx, fd, cfg, st, true)
}

// recoverFiles fills st.Files (sizes and times of the files the kernel
// holds, from the store; New for those not stored) and the usage, with
// one listing of the prefix, which Mount does anyway to count the usage.
func recoverFiles(ctx context.Context, cfg Config, st *State) error {
	paths := map[uint64]string{1: ""}
	var path func(id uint64, depth int) (string, bool)
	path = func(id uint64, depth int) (string, bool) {
		if p, ok := paths[id]; ok {
			return p, true
		}
		n, ok := st.Nodes[id]
		if !ok || n.Parent == 0 || depth > 4096 {
			return "", false
		}
		pp, ok := path(n.Parent, depth+1)
		if !ok {
			return "", false
		}
		p := pp + "/" + n.Name
		if pp == "" {
			p = n.Name
		}
		paths[id] = p
		return p, true
	}
	want := map[string]uint64{}
	for id, n := range st.Nodes {
		if n.Dir {
			continue
		}
		if p, ok := path(id, 0); ok {
			want[cfg.Prefix+p] = id
		}
	}
	st.Files = map[uint64]FileState{}
	s, err := newStore(&cfg, 1)
	if err != nil {
		return err
	}
	hidden := cfg.Prefix + cfg.Hidden + "/"
	var used int64
	for obj := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: cfg.Prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("list %s/%s: %w", cfg.Bucket, cfg.Prefix, obj.Err)
		}
		if cfg.Hidden == "" || !strings.HasPrefix(obj.Key, hidden) {
			used += obj.Size
		}
		if id, ok := want[obj.Key]; ok {
			st.Files[id] = FileState{Size: obj.Size, Mtime: obj.LastModified}
			delete(want, obj.Key)
		}
	}
	for _, id := range want {
		st.Files[id] = FileState{Mtime: time.Now(), New: true}
	}
	st.Used, st.Capacity = used, cfg.CapacityBytes
	return nil
}

// resentUnknown answers a resent request that refers to what the dead
// server had already let go (a RELEASE it answered, but whose answer the
// kernel never got): go-fuse would panic on the unknown handle. It
// returns the reply to write, or nil to handle the request as usual.
func (t *kernelTable) resentUnknown(req []byte) []byte {
	h := (*fuse.InHeader)(unsafe.Pointer(&req[0]))
	if h.Unique&uniqueResend == 0 || (h.Opcode != opRelease && h.Opcode != opReleasedir) {
		return nil
	}
	args := req[inHeaderSize:]
	if len(args) < 8 {
		return nil
	}
	t.mu.Lock()
	_, known := t.handles[binary.LittleEndian.Uint64(args)]
	t.mu.Unlock()
	if known {
		return nil
	}
	return statusReply(h.Unique, 0)
}

// statusReply is a reply with no body.
func statusReply(unique uint64, errno syscall.Errno) []byte {
	b := make([]byte, outHeaderSize)
	out := (*fuse.OutHeader)(unsafe.Pointer(&b[0]))
	out.Length, out.Status, out.Unique = uint32(outHeaderSize), -int32(errno), unique
	return b
}

// DupFUSE returns a duplicate of the mount's /dev/fuse fd, for a keeper.
func (s *Server) DupFUSE() (*os.File, error) {
	if s.conn == nil {
		return nil, fmt.Errorf("%s is served by go-fuse's own loop: no fd to keep", s.mountpoint)
	}
	fd, err := dupFile(s.conn.dev)
	if err != nil {
		return nil, fmt.Errorf("dup /dev/fuse: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/fuse"), nil
}

// ConnID is the FUSE connection number of the mount at mountpoint: its
// directory in /sys/fs/fuse/connections (the kernel's dev_t of the
// superblock).
func ConnID(mountpoint string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return 0, err
	}
	return uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)), nil
}
