package bucketfs

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Server is one mounted filesystem.
type Server struct {
	fsys       *bfs
	srv        *fuse.Server // go-fuse's own loop, when not root (fusermount mounts)
	conn       *conn        // our loop (serve.go): a mount that can be handed over
	root       *dirNode
	mountpoint string
	done       chan struct{}
	init       []byte // a resumed server's INIT request, until Start
	resend     bool   // a crash's successor (Recover): Start asks the kernel to resend
}

// bfs is the state the nodes share.
type bfs struct {
	cfg   Config
	st    *store
	cache *listCache

	mu       sync.Mutex
	capacity int64
	used     int64 // sum of the sizes of the files under the prefix
	staged   int64 // bytes reserved by staging files

	stagingDir  string
	uploadSlots chan struct{} // one per part being uploaded
	readSlots   chan struct{} // one per read-ahead part beyond a stream's own (getstream.go)

	putSlots chan struct{}          // one per background PUT (asyncput.go)
	putsWG   sync.WaitGroup         // the background PUTs' goroutines
	pmu      sync.Mutex             // guards pending
	pending  map[*asyncPut]struct{} // background PUTs in flight

	lastIno   atomic.Uint64            // the last inode number (= node ID) given out
	restoring map[nameKey]restoredNode // while a successor rebuilds the kernel's nodes (handover.go)
	openLost  bool                     // while a crash's successor reopens a handle whose writes died (recover.go)
}

// stable returns the identity of a new inode: its number is the node ID
// the kernel knows it by, so a successor can give it the same one.
func (b *bfs) stable(mode uint32) fs.StableAttr {
	return fs.StableAttr{Mode: mode, Ino: b.lastIno.Add(1)}
}

const (
	fsType   = "bucketfs" // the mount shows as fuse.bucketfs
	maxWrite = 1 << 20    // the largest read or write request from the kernel
	// readBudget bounds the read-ahead parts sequential readers borrow,
	// over the whole mount (getstream.go).
	readBudget = 128 << 20
)

// fdMountpoint is go-fuse's magic mountpoint: serve an already mounted
// /dev/fuse fd instead of mounting.
var fdMountpoint = regexp.MustCompile(`^/dev/fd/[0-9]+$`)

// Check makes sure the bucket exists and cfg's keys open it, within
// ConnectTimeout, without mounting anything. The mounter asks it before it
// starts s3fs or rclone: their own checks come after mount(2), in FUSE's
// INIT, and under load a first stat can be answered before s3fs gives up,
// so a wrong key looked mounted.
func Check(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	st, err := newStore(&cfg, 1)
	if err != nil {
		return err
	}
	return st.check(ctx)
}

// Mount checks the bucket, counts the usage under the prefix and mounts at
// mountpoint, which is a directory, or /dev/fd/N: an open /dev/fuse whose
// mount(2) another process did (so a long-lived process can hold the mount
// while servers come and go). It returns when the filesystem answers.
// As root, the mount is served by this package's own loop, and can be
// handed to a successor (Server.Handover, Resume).
func Mount(ctx context.Context, mountpoint string, cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	check, err := newStore(&cfg, 1)
	if err != nil {
		return nil, err
	}
	if err := check.check(ctx); err != nil {
		return nil, err
	}
	b, err := newBFS(cfg)
	if err != nil {
		return nil, err
	}
	var used int64
	hidden := cfg.Prefix + cfg.Hidden + "/"
	count := func(key string, size int64) error {
		if cfg.Hidden == "" || !strings.HasPrefix(key, hidden) {
			used += size
		}
		return nil
	}
	if err := b.st.walk(ctx, cfg.Prefix, count); err != nil {
		return nil, fmt.Errorf("count usage of %s/%s: %w", cfg.Bucket, cfg.Prefix, err)
	}
	b.used = used
	if err := b.makeStagingDir(); err != nil {
		return nil, err
	}
	s := &Server{fsys: b, root: &dirNode{fsys: b}, mountpoint: mountpoint, done: make(chan struct{})}
	opts := b.options()
	isFD := fdMountpoint.MatchString(mountpoint)
	switch {
	case isFD:
		var n int
		fmt.Sscanf(mountpoint, "/dev/fd/%d", &n)
		fd, err := unix.FcntlInt(uintptr(n), unix.F_DUPFD_CLOEXEC, 0) // the caller keeps its own
		if err != nil {
			os.RemoveAll(b.stagingDir)
			return nil, fmt.Errorf("serve %s: %w", mountpoint, err)
		}
		err = s.serve(fd, opts, nil)
		if err != nil {
			unix.Close(fd)
		}
	case os.Geteuid() == 0:
		var f *os.File
		f, err = MountFUSE(mountpoint, cfg)
		if err != nil {
			break
		}
		fd, derr := dupFile(f)
		f.Close()
		if derr != nil {
			unix.Unmount(mountpoint, unix.MNT_DETACH)
			err = derr
			break
		}
		if err = s.serve(fd, opts, nil); err != nil {
			unix.Close(fd)
			unix.Unmount(mountpoint, unix.MNT_DETACH)
		}
	default:
		s.srv, err = fs.Mount(mountpoint, s.root, opts)
	}
	if err != nil {
		os.RemoveAll(b.stagingDir)
		return nil, fmt.Errorf("mount %s at %s: %w", cfg.FsName, mountpoint, err)
	}
	if s.conn != nil {
		select { // go-fuse's fs.Mount waits for INIT too
		case <-s.conn.initDone:
		case <-s.conn.ended:
			os.RemoveAll(b.stagingDir)
			return nil, fmt.Errorf("mount %s at %s: the kernel ended the connection before INIT", cfg.FsName, mountpoint)
		case <-ctx.Done():
			s.conn.stop()
			s.conn.end()
			if !isFD {
				unix.Unmount(mountpoint, unix.MNT_DETACH)
			}
			os.RemoveAll(b.stagingDir)
			return nil, fmt.Errorf("mount %s at %s: waiting for INIT: %w", cfg.FsName, mountpoint, ctx.Err())
		}
	}
	if !isFD {
		if s.conn != nil {
			PollHack(mountpoint)
		}
		setKernelReadAhead(mountpoint)
	}
	go s.waitEnd()
	klog.InfoS("bucketfs mounted", "endpoint", cfg.Endpoint, "bucket", cfg.Bucket, "prefix", cfg.Prefix,
		"mountpoint", mountpoint, "capacity", cfg.CapacityBytes, "used", used, "readOnly", cfg.ReadOnly)
	return s, nil
}

// newBFS makes the filesystem's shared state, with no staging dir yet.
func newBFS(cfg Config) (*bfs, error) {
	st, err := newStore(&cfg, 0) // default retries for the filesystem's own requests
	if err != nil {
		return nil, err
	}
	b := &bfs{
		cfg:         cfg,
		st:          st,
		cache:       newListCache(cfg.CacheTTL),
		capacity:    cfg.CapacityBytes,
		uploadSlots: make(chan struct{}, cfg.UploadConcurrency),
		readSlots:   make(chan struct{}, max(1, readBudget/cfg.ReadAheadMax)),
		putSlots:    make(chan struct{}, asyncPuts),
		pending:     map[*asyncPut]struct{}{},
	}
	b.lastIno.Store(1) // 1 is the root
	return b, nil
}

func (b *bfs) makeStagingDir() error {
	if err := os.MkdirAll(b.cfg.StagingDir, 0o700); err != nil {
		return fmt.Errorf("staging dir: %w", err)
	}
	dir, err := os.MkdirTemp(b.cfg.StagingDir, "bucketfs-") // 0700: staged data is the tenant's
	if err != nil {
		return fmt.Errorf("staging dir: %w", err)
	}
	b.stagingDir = dir
	return nil
}

// options are go-fuse's settings for the mount; a successor must use the
// same, since the kernel negotiated with them.
func (b *bfs) options() *fs.Options {
	cfg := b.cfg
	ttl := cfg.CacheTTL
	opts := &fs.Options{
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &ttl,
		UID:             cfg.UID,
		GID:             cfg.GID,
		// The node ID is the inode number, which bucketfs gives out
		// (bfs.stable), so a successor knows it (handover.go).
		ExternalNodeID: true,
		RootStableAttr: &fs.StableAttr{Ino: 1},
		MountOptions: fuse.MountOptions{
			FsName:     cfg.FsName,
			Name:       fsType,
			AllowOther: cfg.AllowOther,
			MaxWrite:   maxWrite,
			// One read at a time per open file, in order: the read-ahead
			// below sees a sequential reader as sequential.
			SyncRead: true,
			// Reads are answered from memory; splicing them gains
			// nothing, and go-fuse's splice pipe (1 MiB) is one header
			// short of a 1 MiB read, which it logs every time.
			DisableSplice: true,
			// Without root, go-fuse mounts through fusermount (and
			// serves with its own loop: no handover).
			DirectMount: false,
			// nosuid, nodev, as fusermount mounts: a bucket's content
			// must not become set-uid programs or device nodes.
			DirectMountFlags: syscall.MS_NOSUID | syscall.MS_NODEV,
		},
	}
	if cfg.AllowOther {
		// The kernel checks permissions against the modes we report, as
		// it would for a local filesystem shared by several users.
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	if cfg.ReadOnly {
		opts.DirectMountFlags |= syscall.MS_RDONLY
		opts.MountOptions.Options = append(opts.MountOptions.Options, "ro")
	}
	return opts
}

// serve serves the /dev/fuse fd with this package's loop; init is a
// predecessor's INIT request, or nil for a new mount.
func (s *Server) serve(fd int, opts *fs.Options, init []byte) error {
	raw := fs.NewNodeFS(s.root, opts)
	ps := fuse.NewProtocolServer(raw, &opts.MountOptions)
	c, err := newConn(fd, ps, newKernelTable())
	if err != nil {
		return err
	}
	s.conn = c
	if p := s.fsys.cfg.JournalPath; p != "" {
		if err := c.table.journalTo(p, 0); err != nil {
			return err
		}
	}
	if init == nil {
		return c.start(nil)
	}
	return nil // Resume replays first, then starts
}

// waitEnd ends the server when the kernel lets go (or the mount is handed over).
func (s *Server) waitEnd() {
	if s.srv != nil {
		s.srv.Wait()
	} else {
		<-s.conn.ended
		s.conn.table.stopJournal(true) // unmounted: nothing to recover (handed over: stopped already)
	}
	// No request comes any more: the files closed before the
	// unmount are stored before Wait returns.
	s.fsys.putsWG.Wait()
	os.RemoveAll(s.fsys.stagingDir)
	close(s.done)
}

// SetCapacity changes the quota at run time (expansion). A capacity below
// the usage is allowed: writes that grow files fail until files shrink.
func (s *Server) SetCapacity(bytes int64) error {
	if bytes <= 0 {
		return fmt.Errorf("capacity %d: must be positive", bytes)
	}
	s.fsys.mu.Lock()
	s.fsys.capacity = bytes
	s.fsys.mu.Unlock()
	return nil
}

// SetKeys rotates the S3 keys of a mounted filesystem. The new keys must
// open the bucket (checked first, within ConnectTimeout); else the mount
// keeps the old ones and SetKeys says why.
func (s *Server) SetKeys(ctx context.Context, accessKey, secretKey string) error {
	if accessKey == "" || secretKey == "" {
		return fmt.Errorf("access key and secret key are required")
	}
	cfg := s.fsys.cfg
	cfg.AccessKey, cfg.SecretKey = accessKey, secretKey
	check, err := newStore(&cfg, 1)
	if err != nil {
		return err
	}
	if err := check.check(ctx); err != nil {
		return fmt.Errorf("new keys: %w", err)
	}
	s.fsys.st.keys.set(accessKey, secretKey)
	return nil
}

// Usage returns the bytes used under the prefix and the capacity.
func (s *Server) Usage() (used, capacity int64) {
	s.fsys.mu.Lock()
	defer s.fsys.mu.Unlock()
	return s.fsys.used, s.fsys.capacity
}

// Unmount unmounts (EBUSY while files are open) and returns once the
// kernel has let go; Wait then returns. A server of /dev/fd/N cannot: the
// process that mounted unmounts the path (see MountFUSE).
func (s *Server) Unmount() error {
	var err error
	switch {
	case s.srv != nil:
		err = s.srv.Unmount()
	case fdMountpoint.MatchString(s.mountpoint):
		err = fmt.Errorf("a server of %s cannot unmount: unmount the path", s.mountpoint)
	default:
		err = unix.Unmount(s.mountpoint, 0)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", s.mountpoint, err)
	}
	s.Wait()
	return nil
}

// Wait returns when the filesystem is unmounted (by Unmount, umount(8) or
// the kernel), the files closed before are stored (or their upload has
// failed) and its staging files are gone.
func (s *Server) Wait() { <-s.done }

// Drain waits for the background uploads of the files closed so far, for
// a process about to exit without unmounting.
func (s *Server) Drain() { s.fsys.waitPuts("") }

// reserve grows the usage by delta bytes, or fails with ENOSPC if that
// passes the capacity. A negative delta always succeeds.
func (b *bfs) reserve(delta int64) syscall.Errno {
	b.mu.Lock()
	defer b.mu.Unlock()
	if delta > 0 && b.used+delta > b.capacity {
		return syscall.ENOSPC
	}
	b.used += delta
	if b.used < 0 {
		b.used = 0 // files others wrote after we counted, then deleted here
	}
	return 0
}

// reserveStaging takes delta bytes of the staging budget, or EFBIG.
func (b *bfs) reserveStaging(delta int64) syscall.Errno {
	b.mu.Lock()
	defer b.mu.Unlock()
	if delta > 0 && b.staged+delta > b.cfg.StagingLimit {
		return syscall.EFBIG
	}
	b.staged += delta
	return 0
}

func (b *bfs) statfs(out *fuse.StatfsOut) {
	const bs = 4096
	b.mu.Lock()
	used, capacity := b.used, b.capacity
	b.mu.Unlock()
	free := capacity - used
	if free < 0 {
		free = 0
	}
	out.Bsize, out.Frsize = bs, bs
	out.Blocks = uint64(capacity+bs-1) / bs
	out.Bfree = uint64(free) / bs
	out.Bavail = out.Bfree
	out.Files = 1 << 30
	out.Ffree = 1 << 30
	out.NameLen = 255
}

// ctxFor bounds a request the kernel is waiting on: a hung server must not
// hang the application forever. It does not end when the kernel
// interrupts the request: a signal to the caller (Go's runtime preempts
// its threads with SIGURG all the time) would otherwise abort an upload
// half way and fail close(2) or fsync(2) with EINTR, which no program
// retries for close. The request runs to its end or its timeout.
func ctxFor(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
}

// keyOf is the key prefix of a directory (dir) or the key of a file, for
// the inode at path rel (relative to the mount's root).
func (b *bfs) keyOf(rel string, dir bool) string {
	if rel == "" {
		return b.cfg.Prefix
	}
	if dir {
		return b.cfg.Prefix + rel + "/"
	}
	return b.cfg.Prefix + rel
}

// logErr logs a failed store call (never with keys: errors carry none)
// and returns its errno.
func logErr(op, key string, err error) syscall.Errno {
	e := errno(err)
	if e != syscall.ENOENT {
		klog.ErrorS(err, "bucketfs", "op", op, "key", key)
	}
	return e
}

// setKernelReadAhead raises the kernel's read-ahead on the mount from the
// 128 KiB it negotiates to 1 MiB (the largest read request, maxWrite), so
// a sequential reader costs a FUSE round trip per MiB, not per 128 KiB.
// Best effort: it needs root, and a failure costs only speed.
func setKernelReadAhead(mountpoint string) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(path, []byte(strconv.Itoa(maxWrite>>10)), 0); err != nil {
		klog.V(2).InfoS("bucketfs: kernel read-ahead left as is", "path", path, "err", err)
	}
}
