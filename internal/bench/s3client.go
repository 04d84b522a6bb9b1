package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"
)

// Client is the row of the S3 client itself: the same four jobs done with
// minio-go straight against the server, no FUSE and no mounter. It is the
// ceiling of any mounter on this server and machine: a mounter adds the
// kernel round trips and its own copies on top of exactly these requests.
// It does what bucketfs does with the same settings: writes stream 8 MiB
// parts, 4 at a time, unsigned; reads are ranged GETs of 8 MiB, 4 at a
// time; small files go up 32 at a time; "ls -l" is one listing (it carries
// size and time, so no per-object request).
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

		start = time.Now()
		if err := putSmall(ctx, cl, bucket, fmt.Sprintf("small-%d/", run), cfg.Files, clientPuts); err != nil {
			return S3Row{}, err
		}
		creates = append(creates, float64(cfg.Files)/time.Since(start).Seconds())

		dropCaches()
		start = time.Now()
		if err := getParallel(ctx, cl, bucket, big, size); err != nil {
			return S3Row{}, err
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

const (
	clientPart     = 8 << 20
	clientParallel = 4  // bucketfs's upload concurrency; for reads, the best of 1, 2, 4, 8 for a client alone here
	clientPuts     = 32 // bucketfs's background PUTs
)

// putSmall stores n objects of 4 KiB under prefix, puts at a time.
func putSmall(ctx context.Context, cl *minio.Client, bucket, prefix string, n, puts int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(puts)
	data := make([]byte, 4096)
	for i := range n {
		g.Go(func() error {
			key := fmt.Sprintf("%sf%05d", prefix, i)
			_, err := cl.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)),
				minio.PutObjectOptions{DisableContentSha256: true})
			if err != nil {
				return fmt.Errorf("put %s: %w", key, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// sweepClient is --client-sweep: the client's write and creates at other
// settings than bucketfs's, to show whether the client row is the
// server's ceiling or only the ceiling of those settings. Each setting
// runs cfg.Runs times; the lines go to progress.
func sweepClient(ctx context.Context, cfg S3Config, cl *minio.Client, bucket string, progress io.Writer) error {
	size := int64(cfg.FileMiB) << 20
	for run := range cfg.Runs {
		for _, threads := range []uint{1, 4, 8, 16} {
			for _, part := range []uint64{8 << 20, 32 << 20} {
				start := time.Now()
				_, err := cl.PutObject(ctx, bucket, "big", &patternReader{left: size}, size, minio.PutObjectOptions{
					PartSize: part, NumThreads: threads, DisableContentSha256: true})
				if err != nil {
					return fmt.Errorf("put: %w", err)
				}
				fmt.Fprintf(progress, "client sweep run %d: write, %2d parts of %2d MiB at once: %4.0f MB/s\n",
					run+1, threads, part>>20, float64(size)/1e6/time.Since(start).Seconds())
			}
		}
		for _, puts := range []int{8, 32, 64, 128} {
			start := time.Now()
			if err := putSmall(ctx, cl, bucket, fmt.Sprintf("sweep-%d-%d/", run, puts), cfg.Files, puts); err != nil {
				return err
			}
			fmt.Fprintf(progress, "client sweep run %d: creates, %3d PUTs at once: %4.0f/s\n",
				run+1, puts, float64(cfg.Files)/time.Since(start).Seconds())
		}
	}
	return nil
}

// getParallel reads an object of size bytes with ranged GETs of
// clientPart bytes, clientParallel at a time.
func getParallel(ctx context.Context, cl *minio.Client, bucket, key string, size int64) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(clientParallel)
	bufs := make(chan []byte, clientParallel)
	for range clientParallel {
		bufs <- make([]byte, clientPart)
	}
	for off := int64(0); off < size; off += clientPart {
		g.Go(func() error {
			buf := <-bufs
			defer func() { bufs <- buf }()
			n := min(clientPart, size-off)
			opts := minio.GetObjectOptions{}
			if err := opts.SetRange(off, off+n-1); err != nil {
				return err
			}
			obj, err := cl.GetObject(ctx, bucket, key, opts)
			if err != nil {
				return fmt.Errorf("get %s: %w", key, err)
			}
			defer obj.Close()
			if _, err := io.ReadFull(obj, buf[:n]); err != nil {
				return fmt.Errorf("read %s at %d: %w", key, off, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// patternReader yields size bytes of the same pattern writeFile writes,
// without holding them in memory: one MiB of it, copied over and over, so
// making the data costs the client next to nothing.
type patternReader struct {
	left int64
	off  int64
}

var pattern = func() []byte {
	p := make([]byte, 1<<20)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return p
}()

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(int64(len(p)), r.left)], pattern[r.off%int64(len(pattern)):])
	r.off += int64(n)
	r.left -= int64(n)
	return n, nil
}
