package bucketfs

import (
	"context"
	"io"

	"github.com/minio/minio-go/v7"
)

// getStream is one GET from an offset to the end of an object, read into
// chunks by a goroutine while the reader consumes them. A sustained
// sequential reader gets it: one request and one TCP stream for the rest
// of the file, as a plain S3 client reads, instead of a request per
// read-ahead window, each starting cold. Memory is bounded: chunks come
// from a free list of streamChunks buffers.
type getStream struct {
	next   int64 // the offset of the next chunk the reader will take
	chunks chan chunk
	free   chan []byte
	cancel context.CancelFunc
}

type chunk struct {
	off  int64
	data []byte
	err  error // set on the last chunk sent when the GET failed
}

const (
	streamChunk  = 1 << 20
	streamChunks = 8 // with ReadAheadMax 8 MiB: the same memory as windows
)

func startGetStream(s *store, key string, off, size int64, chunks int) *getStream {
	ctx, cancel := context.WithCancel(context.Background())
	st := &getStream{next: off, chunks: make(chan chunk, chunks), free: make(chan []byte, chunks+1), cancel: cancel}
	for range chunks + 1 {
		st.free <- make([]byte, streamChunk)
	}
	go st.fill(ctx, s, key, off, size)
	return st
}

func (st *getStream) fill(ctx context.Context, s *store, key string, off, size int64) {
	defer close(st.chunks)
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(off, size-1); err != nil {
		st.chunks <- chunk{off: off, err: err}
		return
	}
	s.gets.Add(1)
	rc, _, _, err := s.core.GetObject(ctx, s.bucket, key, opts)
	if err != nil {
		st.chunks <- chunk{off: off, err: err}
		return
	}
	defer rc.Close()
	for off < size {
		var buf []byte
		select {
		case buf = <-st.free:
		case <-ctx.Done():
			return
		}
		n, err := io.ReadFull(rc, buf[:min(int64(len(buf)), size-off)])
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = nil // the object shrank: what came is the end
			size = off + int64(n)
		}
		select {
		case st.chunks <- chunk{off: off, data: buf[:n], err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil || n == 0 {
			return
		}
		off += int64(n)
	}
}

// take waits for the chunk at st.next. ok is false when the stream has
// ended or failed: the caller falls back to ranged GETs.
func (st *getStream) take(ctx context.Context) (c chunk, ok bool, interrupted bool) {
	select {
	case c, ok = <-st.chunks:
	case <-ctx.Done():
		return chunk{}, false, true
	}
	if !ok || c.err != nil || len(c.data) == 0 {
		return chunk{}, false, false
	}
	st.next = c.off + int64(len(c.data))
	return c, true, false
}

// recycle hands a chunk's buffer back for the next chunk.
func (st *getStream) recycle(buf []byte) {
	if cap(buf) != streamChunk {
		return
	}
	select {
	case st.free <- buf[:cap(buf)]:
	default:
	}
}

func (st *getStream) stop() { st.cancel() }
