package bucketfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// The serving loop. go-fuse's fuse.Server reads /dev/fuse itself, and
// keeps what the kernel negotiated (INIT) and which node IDs and handles
// it gave out to itself, so a mount it serves dies with it. Here the loop
// is ours: it reads each request, has go-fuse's protocol layer
// (fuse.ProtocolServer) answer it, and shows request and reply to the
// kernel table before writing the reply. It can stop between requests
// (for a handover) with every answered request accounted for, and a
// successor that has the INIT request and the table serves on where this
// one stopped.

// bufSize holds the largest request (a WRITE of maxWrite bytes and its
// header) and the largest reply (a READ of maxWrite bytes).
const bufSize = maxWrite + 64<<10

var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// conn is one /dev/fuse connection served by this process.
type conn struct {
	dev   *os.File // nonblocking, in the runtime's poller: a read can be cut short
	ps    *fuse.ProtocolServer
	table *kernelTable

	mu       sync.Mutex
	init     []byte // the kernel's INIT request, for a successor
	stopping bool

	handlers sync.WaitGroup // requests being answered
	loopDone chan struct{}  // closed when the current loop has ended and its handlers returned
	initDone chan struct{}  // closed once INIT is answered
	initOnce sync.Once
	ended    chan struct{} // closed when the connection is ours no more (unmounted, or handed over)
	endOnce  sync.Once
}

// aLongTimeAgo is a read deadline that has passed: it wakes the loop.
var aLongTimeAgo = time.Unix(1, 0)

// newConn serves the /dev/fuse fd of dev through ps. dev is made
// nonblocking and owned by the conn from here on.
func newConn(fd int, ps *fuse.ProtocolServer, table *kernelTable) (*conn, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("/dev/fuse nonblocking: %w", err)
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	if dev == nil {
		return nil, fmt.Errorf("/dev/fuse fd %d is not valid", fd)
	}
	return &conn{dev: dev, ps: ps, table: table, initDone: make(chan struct{}), ended: make(chan struct{})}, nil
}

// start feeds the predecessor's INIT request (if any) to the protocol
// layer, so it knows what was negotiated (the kernel sends INIT only once
// per connection), and starts the loop.
func (c *conn) start(init []byte) error {
	if init != nil {
		b := bufs.Get().(*[]byte)
		defer bufs.Put(b)
		if _, st := c.ps.HandleRequest([][]byte{init}, [][]byte{*b}); !st.Ok() {
			return fmt.Errorf("replay INIT: %v", st)
		}
		c.init = init
		c.initOnce.Do(func() { close(c.initDone) })
	}
	c.run()
	return nil
}

// run starts a loop.
func (c *conn) run() {
	c.mu.Lock()
	c.stopping = false
	c.loopDone = make(chan struct{})
	done := c.loopDone
	c.mu.Unlock()
	_ = c.dev.SetReadDeadline(time.Time{})
	go c.loop(done)
}

// loop reads requests until stopped (done closes, the conn stays) or the
// connection ends (unmounted: the conn ends too).
func (c *conn) loop(done chan struct{}) {
	var err error
	defer func() {
		c.handlers.Wait()
		close(done)
		if err != nil {
			c.end()
		}
	}()
	for {
		bp := bufs.Get().(*[]byte)
		var n int
		n, err = c.dev.Read(*bp)
		if err != nil {
			bufs.Put(bp)
			var errno syscall.Errno
			errors.As(err, &errno)
			switch {
			case errno == syscall.ENOENT, errno == syscall.EINTR, errno == syscall.EAGAIN:
				continue // a request interrupted before we read it; a spurious wakeup
			case errors.Is(err, os.ErrDeadlineExceeded):
				c.mu.Lock()
				stopping := c.stopping
				c.mu.Unlock()
				if stopping {
					err = nil
					return
				}
				continue
			case errno == syscall.ENODEV: // unmounted
			default:
				klog.ErrorS(err, "bucketfs: read /dev/fuse")
			}
			return
		}
		req := (*bp)[:n]
		if n >= inHeaderSize && binary.LittleEndian.Uint32(req[4:]) == opInit {
			c.mu.Lock()
			c.init = append([]byte(nil), req...)
			c.mu.Unlock()
			c.table.setInit(c.init)
			c.handle(bp, n) // before any other request: they depend on it
			c.initOnce.Do(func() { close(c.initDone) })
			continue
		}
		c.handlers.Add(1)
		go func() {
			defer c.handlers.Done()
			c.handle(bp, n)
		}()
	}
}

// handle answers one request, which is in (*bp)[:n].
func (c *conn) handle(bp *[]byte, n int) {
	defer bufs.Put(bp)
	req := (*bp)[:n]
	if n >= inHeaderSize {
		if reply := c.table.resentUnknown(req); reply != nil {
			c.reply(reply)
			return
		}
		defer func() {
			// go-fuse panics on a node or handle it does not know;
			// after a crash's recovery, a resent request may name one
			// the dead server's table and the kernel disagree on.
			// The request fails; the server lives.
			if r := recover(); r != nil {
				h := (*fuse.InHeader)(unsafe.Pointer(&req[0]))
				klog.ErrorS(fmt.Errorf("%v", r), "bucketfs: request failed", "opcode", h.Opcode, "node", h.NodeId)
				if h.Opcode != opForget && h.Opcode != opBatchForget {
					c.reply(statusReply(h.Unique, syscall.EIO))
				}
			}
		}()
	}
	// A release or a forget is taken in before go-fuse frees the handle's
	// or the node's number: a request handled at the same time can be
	// given that number at once, and its open or lookup must be taken in
	// after, or the table loses what the kernel holds.
	frees := freesNumber(req)
	if frees {
		c.table.observe(req, nil)
	}
	op := bufs.Get().(*[]byte)
	defer bufs.Put(op)
	m, st := c.ps.HandleRequest([][]byte{req}, [][]byte{*op})
	if !st.Ok() {
		klog.ErrorS(syscall.Errno(st), "bucketfs: malformed request")
		return
	}
	reply := (*op)[:m]
	if !frees {
		c.table.observe(req, reply)
	}
	if m == 0 {
		return // FORGET and the like: no reply
	}
	c.reply(reply)
}

// freesNumber says whether req ends a file handle or forgets a node.
func freesNumber(req []byte) bool {
	if len(req) < inHeaderSize {
		return false
	}
	switch (*fuse.InHeader)(unsafe.Pointer(&req[0])).Opcode {
	case opRelease, opReleasedir, opForget, opBatchForget:
		return true
	}
	return false
}

// reply writes one reply to the kernel.
func (c *conn) reply(reply []byte) {
	if _, err := c.dev.Write(reply); err != nil {
		// ENOENT: the kernel gave up on the request (interrupted, or
		// the connection was aborted). Nothing to do either way.
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENODEV) {
			klog.ErrorS(err, "bucketfs: reply to the kernel")
		}
	}
}

// stop ends the loop between two requests and waits until every request
// read so far is answered. Requests the kernel sends meanwhile wait in its
// queue for whoever reads next.
func (c *conn) stop() {
	c.mu.Lock()
	c.stopping = true
	done := c.loopDone
	c.mu.Unlock()
	_ = c.dev.SetReadDeadline(aLongTimeAgo)
	<-done
}

// end closes this process's /dev/fuse fd: the connection lives on while
// another process (a successor, a keeper) holds it, else the kernel aborts
// it (the mount answers ENOTCONN until unmounted).
func (c *conn) end() {
	c.endOnce.Do(func() {
		c.dev.Close()
		close(c.ended)
	})
}

// initRequest returns the kernel's INIT request.
func (c *conn) initRequest() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.init
}

// PollHack makes the kernel send a POLL now, which go-fuse answers ENOSYS,
// so that it never sends one again: the kernel asks a FUSE server to
// poll a file when a process adds the file to an epoll set, which Go's
// runtime does for every file it opens, from a thread that stops the
// world's garbage collection until the answer comes, and the answer
// cannot come while the world is stopped if this process serves it. As
// go-fuse's own loop does (fuse/poll_unix.go), through the magic name its
// protocol layer answers. Mount does it for a directory; a process that
// serves /dev/fd/N (Mount cannot know the path) and also uses the mount
// itself calls it once. A successor needs none: the kernel remembers.
func PollHack(mountpoint string) {
	fd, err := syscall.Open(mountpoint+"/.go-fuse-epoll-hack", syscall.O_RDONLY, 0)
	if err != nil {
		klog.ErrorS(err, "bucketfs: poll hack", "mountpoint", mountpoint)
		return
	}
	_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	syscall.Close(fd)
}

// dupFile duplicates f's descriptor (close-on-exec) without f.Fd(), which
// would take f out of the runtime's poller for good.
func dupFile(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(raw uintptr) {
		fd, err = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	return fd, err
}

// DupFile is dupFile for the mounter: a received /dev/fuse fd.
func DupFile(f *os.File) (int, error) { return dupFile(f) }
