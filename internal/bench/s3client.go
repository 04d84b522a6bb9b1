package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/minio/minio-go/v7"
)

// Client is the row of the S3 client itself: the same four jobs done with
// minio-go straight against the server, no FUSE and no mounter. It is the
// ceiling of any mounter on this server and machine: a mounter adds the
// kernel round trips and its own copies on top of exactly these requests.
// Writes stream 8 MiB parts, 4 at a time, unsigned, as bucketfs does; "ls -l"
// is one listing (it carries size and time, so no per-object request).
const Client = "s3 client"

func measureClient(ctx context.Context, cfg S3Config, cl *minio.Client, bucket string) (S3Row, error) {
	var writes, reads, creates, lists []float64
	size := int64(cfg.FileMiB) << 20
	for run := 0; run < cfg.Runs; run++ {
		big := fmt.Sprintf("big-%d", run)
		start := time.Now()
		_, err := cl.PutObject(ctx, bucket, big, &patternReader{left: size}, size, minio.PutObjectOptions{
			PartSize: 8 << 20, NumThreads: 4, DisableContentSha256: true})
		if err != nil {
			return S3Row{}, fmt.Errorf("put %s: %w", big, err)
		}
		writes = append(writes, float64(size)/1e6/time.Since(start).Seconds())

		data := make([]byte, 4096)
		start = time.Now()
		for i := 0; i < cfg.Files; i++ {
			key := fmt.Sprintf("small-%d/f%05d", run, i)
			if _, err := cl.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)),
				minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
				return S3Row{}, fmt.Errorf("put %s: %w", key, err)
			}
		}
		creates = append(creates, float64(cfg.Files)/time.Since(start).Seconds())

		dropCaches()
		start = time.Now()
		obj, err := cl.GetObject(ctx, bucket, big, minio.GetObjectOptions{})
		if err != nil {
			return S3Row{}, fmt.Errorf("get %s: %w", big, err)
		}
		_, err = io.CopyBuffer(io.Discard, obj, make([]byte, 1<<20))
		obj.Close()
		if err != nil {
			return S3Row{}, fmt.Errorf("read %s: %w", big, err)
		}
		reads = append(reads, float64(size)/1e6/time.Since(start).Seconds())

		start = time.Now()
		for o := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: fmt.Sprintf("small-%d/", run)}) {
			if o.Err != nil {
				return S3Row{}, fmt.Errorf("list: %w", o.Err)
			}
		}
		lists = append(lists, float64(time.Since(start).Microseconds())/1000)
	}
	return S3Row{Kind: Client, WriteMBs: median(writes), ReadMBs: median(reads), CreatesPerS: median(creates), ListMs: median(lists)}, nil
}

// patternReader yields size bytes of the same pattern writeFile writes,
// without holding them in memory.
type patternReader struct {
	left int64
	off  int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.left)
	for i := range n {
		p[i] = byte((r.off + i) % (1 << 20) * 7)
	}
	r.off += n
	r.left -= n
	return int(n), nil
}
