package bucketfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// readAhead serves one open file's reads with ranged GETs. A reader that
// goes on where it stopped is sequential: its window doubles from 1 MiB up
// to ReadAheadMax, and the next window is fetched in the background while
// the current one is read. Any jump resets it to fetching just what was
// asked. Memory: at most two windows per open file.
type readAhead struct {
	fsys *bfs
	mu   sync.Mutex

	buf        []byte // a fetched range, from bufOff
	spare      []byte // a buffer no one uses, for the next fetch
	bufOff     int64
	next       *fetch // the window being fetched in the background
	stream     *getStream
	fromStream bool // buf came from stream: recycle it there
	window     int64
	lastEnd    int64 // where the previous read ended
}

type fetch struct {
	off    int64
	length int64
	done   chan struct{}
	data   []byte
	err    error
	cancel context.CancelFunc
}

const firstWindow = 1 << 20

func newReadAhead(b *bfs) *readAhead { return &readAhead{fsys: b} }

func (r *readAhead) read(ctx context.Context, key string, size int64, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	want := min(int64(len(dest)), size-off)
	seq := off == r.lastEnd
	switch {
	case !seq:
		r.window = 0
	case r.window == 0:
		r.window = firstWindow
	default:
		r.window = min(2*r.window, r.fsys.cfg.ReadAheadMax)
	}
	// A read may span the end of one fetched range: fill it piece by
	// piece, since a short answer would mean end of file to the kernel.
	got := int64(0)
	for got < want {
		pos := off + got
		if pos >= r.bufOff && pos < r.bufOff+int64(len(r.buf)) {
			got += int64(copy(dest[got:want], r.buf[pos-r.bufOff:]))
			continue
		}
		if st := r.stream; st != nil && pos == st.next {
			c, ok, interrupted := st.take(ctx)
			if interrupted {
				return nil, syscall.EINTR
			}
			if ok {
				r.setBuf(c.data, c.off, true)
				continue
			}
			r.stopStream() // it ended or failed: ranged GETs again
		}
		if f := r.next; f != nil && pos >= f.off && pos < f.off+f.length {
			r.next = nil
			select {
			case <-f.done:
			case <-ctx.Done():
				f.cancel()
				return nil, syscall.EINTR
			}
			if f.err == nil && len(f.data) > 0 {
				r.setBuf(f.data, f.off, false)
				continue
			}
		}
		r.dropNext()
		r.stopStream() // a jump: ranged GETs again
		n := max(want-got, r.window)
		n = min(n, size-pos)
		data, err := r.fsys.st.get(ctx, key, pos, n, r.spare)
		r.spare = nil
		if err != nil {
			return nil, logErr("read", key, err)
		}
		if len(data) == 0 {
			break // the object shrank under us: end of file
		}
		r.setBuf(data, pos, false)
	}
	r.lastEnd = off + got
	if !seq {
		r.stopStream()
	}
	end := r.bufOff + int64(len(r.buf))
	switch {
	case !seq || r.stream != nil || end >= size:
	case r.window >= r.fsys.cfg.ReadAheadMax:
		// Sequential for a whole ramp: stream the rest of the file,
		// after the window being fetched, if any.
		if f := r.next; f != nil {
			end = f.off + f.length
		}
		if end < size {
			r.stream = startGetStream(r.fsys, key, end, size)
		}
	case r.next == nil:
		r.prefetch(key, end, min(r.window, size-end))
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (r *readAhead) prefetch(key string, off, length int64) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fetch{off: off, length: length, done: make(chan struct{}), cancel: cancel}
	r.next = f
	// The fetch owns the spare from now on; a fetch dropped unfinished
	// keeps it (it may still be writing), and the GC takes it.
	buf := r.spare
	r.spare = nil
	go func() {
		defer close(f.done)
		f.data, f.err = r.fsys.st.get(ctx, key, off, length, buf)
	}()
}

// setBuf makes data (from off) the range reads are answered from. The
// buffer it replaces goes back where it came from.
func (r *readAhead) setBuf(data []byte, off int64, fromStream bool) {
	if r.fromStream && r.stream != nil {
		r.stream.recycle(r.buf)
	} else if !r.fromStream {
		r.spare = r.buf
	}
	r.buf, r.bufOff, r.fromStream = data, off, fromStream
}

func (r *readAhead) stopStream() {
	if r.stream != nil {
		r.stream.stop()
		r.stream = nil
	}
}

func (r *readAhead) dropNext() {
	if r.next != nil {
		r.next.cancel()
		r.next = nil
	}
}

// close stops a fetch in flight and lets the buffers go.
func (r *readAhead) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropNext()
	r.stopStream()
	r.buf, r.spare = nil, nil
}
