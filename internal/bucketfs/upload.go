package bucketfs

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
)

// stream uploads a file written sequentially from offset 0 while it is
// written: each full part goes up in the background (at most
// UploadConcurrency parts at once over the mount, the writer waiting for a
// slot), and a file that ends within its first part is one plain PUT.
type stream struct {
	fsys     *bfs
	key      string
	buf      []byte // the part being filled
	written  int64
	uploadID string
	next     int // the next part's number

	wg    sync.WaitGroup
	mu    sync.Mutex
	parts []minio.CompletePart
	err   error
}

// partBufs recycles full-size part buffers between parts and files.
var partBufs sync.Pool

func newStream(b *bfs, key string) *stream { return &stream{fsys: b, key: key, next: 1} }

func (s *stream) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *stream) write(ctx context.Context, p []byte) error {
	if err := s.failed(); err != nil {
		return err
	}
	partSize := int(s.fsys.cfg.PartSize)
	for len(p) > 0 {
		if s.buf == nil && s.next > 1 {
			// Past the first part the file is large: take a whole buffer.
			// The first part grows as it fills, so small files stay small.
			if b, ok := partBufs.Get().([]byte); ok && cap(b) == partSize {
				s.buf = b[:0]
			} else {
				s.buf = make([]byte, 0, partSize)
			}
		}
		k := min(partSize-len(s.buf), len(p))
		s.buf = append(s.buf, p[:k]...)
		p = p[k:]
		s.written += int64(k)
		if len(s.buf) == partSize {
			if err := s.sendPart(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// sendPart starts uploading the filled buffer as the next part.
func (s *stream) sendPart(ctx context.Context) error {
	st := s.fsys.st
	if s.uploadID == "" {
		id, err := st.core.NewMultipartUpload(ctx, st.bucket, s.key, st.putOpts())
		if err != nil {
			return fmt.Errorf("start multipart upload: %w", err)
		}
		s.uploadID = id
	}
	if s.next > maxParts {
		return fmt.Errorf("more than %d parts of %d bytes: %w", maxParts, s.fsys.cfg.PartSize, syscall.EFBIG)
	}
	select {
	case s.fsys.uploadSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	num, buf := s.next, s.buf
	s.next++
	s.buf = nil
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.fsys.uploadSlots }()
		// Not the request's context: the write that filled the part has
		// been answered already.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		part, err := st.core.PutObjectPart(ctx, st.bucket, s.key, s.uploadID, num,
			bytes.NewReader(buf), int64(len(buf)), minio.PutObjectPartOptions{DisableContentSha256: true})
		if cap(buf) == int(s.fsys.cfg.PartSize) {
			partBufs.Put(buf[:0]) //nolint:staticcheck // a slice header, reused whole
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			if s.err == nil {
				s.err = fmt.Errorf("upload part %d: %w", num, err)
			}
			return
		}
		s.parts = append(s.parts, minio.CompletePart{PartNumber: num, ETag: part.ETag})
	}()
	return nil
}

// finish stores the file: one PUT if it never filled a part, else the last
// part and the multipart completion. On failure the upload is aborted.
func (s *stream) finish(ctx context.Context) error {
	st := s.fsys.st
	if s.uploadID == "" {
		return st.put(ctx, s.key, bytes.NewReader(s.buf), int64(len(s.buf)))
	}
	if len(s.buf) > 0 {
		if err := s.sendPart(ctx); err != nil {
			s.abort()
			return err
		}
	}
	s.wg.Wait()
	if err := s.failed(); err != nil {
		s.abort()
		return err
	}
	slices.SortFunc(s.parts, func(a, b minio.CompletePart) int { return a.PartNumber - b.PartNumber })
	if _, err := st.core.CompleteMultipartUpload(ctx, st.bucket, s.key, s.uploadID, s.parts, st.putOpts()); err != nil {
		s.abort()
		return fmt.Errorf("complete multipart upload: %w", err)
	}
	return nil
}

// abort drops the stream: waits for parts in flight and aborts the
// upload, so no orphan parts stay in the bucket.
func (s *stream) abort() {
	s.wg.Wait()
	s.buf = nil
	if s.uploadID == "" {
		return
	}
	st := s.fsys.st
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = st.core.AbortMultipartUpload(ctx, st.bucket, s.key, s.uploadID)
	s.uploadID = ""
}
