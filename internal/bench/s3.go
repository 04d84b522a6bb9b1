package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/spf13/cobra"

	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/mounter"
	"github.com/volplug/volplug/internal/s3server"
)

// S3Config sets up the object-storage bench.
type S3Config struct {
	Versitygw string // the S3 server's binary
	Dir       string // parent of the private temp dir
	FileMiB   int    // the large file
	Files     int    // the small files
	Runs      int    // medians of this many runs
	// ClientSweep also runs the client alone at other settings (see
	// sweepClient).
	ClientSweep bool
}

// S3Row is one mount kind's figures (the floor's too).
type S3Row struct {
	Kind              string
	WriteMBs, ReadMBs float64
	CreatesPerS       float64
	ListMs            float64
}

func newS3Command() *cobra.Command {
	cfg := S3Config{}
	cmd := &cobra.Command{
		Use:   "s3",
		Short: "Measure object-storage mounts: built-in bucketfs, s3fs and rclone against the server's own directory",
		Long: `Starts a versitygw S3 server on 127.0.0.1 over a private directory and, through
a mounter in this process, mounts one bucket with each mounter in turn. Through
each mount it writes a large file (sequential, fsync'd), reads it back cold
(a fresh mount, caches dropped), creates many 4 KiB files and lists them with
ls -l (cold). The floor does the same in the server's backing directory.
Medians of --runs; ratios against s3fs and against the floor. Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rows, err := RunS3(cmd.Context(), cfg, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return WriteS3Table(cmd.OutOrStdout(), rows)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Versitygw, "versitygw", "bin/tools/versitygw", "versitygw binary (scripts/install-versitygw.sh)")
	f.StringVar(&cfg.Dir, "dir", "", "parent of the private temp dir (default: $TMPDIR or /tmp)")
	f.IntVar(&cfg.FileMiB, "file-mib", 512, "size of the large file")
	f.IntVar(&cfg.Files, "files", 1000, "number of 4 KiB files")
	f.IntVar(&cfg.Runs, "runs", 3, "runs per figure (the median is reported)")
	f.BoolVar(&cfg.ClientSweep, "client-sweep", false, "also run the S3 client alone with 1-16 parts and 8-128 PUTs at once: is its row the server's ceiling?")
	return cmd
}

// RunS3 measures every mount kind and the floor.
func RunS3(ctx context.Context, cfg S3Config, progress io.Writer) ([]S3Row, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	dir, err := os.MkdirTemp(cfg.Dir, "volplug-bench-s3-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := startS3(ctx, cfg.Versitygw, filepath.Join(dir, "data"))
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	m, err := mounter.NewServer(filepath.Join(dir, "mounter"))
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "mounter.sock")
	l, err := mounter.Listen(sock)
	if err != nil {
		return nil, err
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = m.Serve(mctx, l) }()
	client := mounter.NewClient(sock)

	if cfg.ClientSweep {
		if err := srv.cl.MakeBucket(ctx, "sweep", minio.MakeBucketOptions{}); err != nil {
			return nil, fmt.Errorf("make bucket: %w", err)
		}
		if err := sweepClient(ctx, cfg, srv.cl, "sweep", progress); err != nil {
			return nil, fmt.Errorf("client sweep: %w", err)
		}
	}
	var rows []S3Row
	for i, kind := range []string{mounter.Builtin, builtinFourParts, mounter.S3FS, mounter.Rclone, Client, "floor"} {
		bucket := fmt.Sprintf("bench-%d", i)
		if err := srv.cl.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
			return nil, fmt.Errorf("make bucket: %w", err)
		}
		if kind == Client {
			fmt.Fprintf(progress, "bench s3: %s\n", kind)
			row, err := measureClient(ctx, cfg, srv.cl, bucket)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", kind, err)
			}
			rows = append(rows, row)
			continue
		}
		target := filepath.Join(dir, "mnt", bucket)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return nil, err
		}
		mountIt := func() (string, func() error, error) {
			if kind == "floor" {
				return filepath.Join(srv.Dir, bucket), func() error { return nil }, nil
			}
			req := &mounter.Request{Target: target, Kind: kind, FS: bucketfs.Config{Endpoint: srv.Endpoint,
				AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: bucket, AllowOther: true}}
			if kind == builtinFourParts {
				req.Kind, req.FS.ReadParallel = mounter.Builtin, 4
			}
			if err := client.Mount(ctx, req); err != nil {
				return "", nil, err
			}
			return target, func() error { return client.Unmount(ctx, target) }, nil
		}
		fmt.Fprintf(progress, "bench s3: %s\n", kind)
		row, err := measure(cfg, kind, mountIt)
		if err != nil {
			// A failed job leaves its mount up: take it down before the
			// mounter and the server go, so no mount outlives the bench.
			_ = client.Unmount(context.Background(), target)
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// builtinFourParts is the built-in mounter with four read-ahead parts in
// flight (ReadParallel 4) instead of its default one: the row that shows
// whether parallel parts pay on this machine.
const builtinFourParts = "builtin, 4 parts"

// measure runs the four jobs cfg.Runs times on fresh mounts.
func measure(cfg S3Config, kind string, mountIt func() (string, func() error, error)) (S3Row, error) {
	var writes, reads, creates, lists []float64
	size := int64(cfg.FileMiB) << 20
	for run := 0; run < cfg.Runs; run++ {
		path, unmount, err := mountIt()
		if err != nil {
			return S3Row{}, err
		}
		big := filepath.Join(path, fmt.Sprintf("big-%d", run))
		start := time.Now()
		if err := writeFile(big, size); err != nil {
			return S3Row{}, err
		}
		writes = append(writes, float64(size)/1e6/time.Since(start).Seconds())
		small := filepath.Join(path, fmt.Sprintf("small-%d", run))
		if err := os.Mkdir(small, 0o755); err != nil {
			return S3Row{}, err
		}
		data := make([]byte, 4096)
		start = time.Now()
		for i := 0; i < cfg.Files; i++ {
			if err := os.WriteFile(filepath.Join(small, fmt.Sprintf("f%05d", i)), data, 0o644); err != nil {
				return S3Row{}, err
			}
		}
		creates = append(creates, float64(cfg.Files)/time.Since(start).Seconds())
		// Cold: a fresh mount, and no page cache of the server's files.
		if err := unmount(); err != nil {
			return S3Row{}, err
		}
		if path, unmount, err = mountIt(); err != nil {
			return S3Row{}, err
		}
		dropCaches()
		start = time.Now()
		if err := readFile(big); err != nil {
			return S3Row{}, err
		}
		reads = append(reads, float64(size)/1e6/time.Since(start).Seconds())
		start = time.Now()
		if err := listLong(small); err != nil {
			return S3Row{}, err
		}
		lists = append(lists, float64(time.Since(start).Microseconds())/1000)
		if err := unmount(); err != nil {
			return S3Row{}, err
		}
	}
	return S3Row{Kind: kind, WriteMBs: median(writes), ReadMBs: median(reads), CreatesPerS: median(creates), ListMs: median(lists)}, nil
}

func writeFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for written := int64(0); written < size; written += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
	return err
}

// listLong is ls -l: read the directory, stat every entry.
func listLong(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, err := os.Lstat(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func dropCaches() {
	syscall.Sync()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// WriteS3Table prints the figures with ratios against s3fs and the floor.
func WriteS3Table(w io.Writer, rows []S3Row) error {
	find := func(kind string) S3Row {
		for _, r := range rows {
			if r.Kind == kind {
				return r
			}
		}
		return S3Row{}
	}
	s3fs, floor, client := find(mounter.S3FS), find("floor"), find(Client)
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "mount\twrite MB/s\tvs s3fs\tvs client\tcold read MB/s\tvs s3fs\tvs client\tvs floor\t4 KiB creates/s\tvs s3fs\tvs client\tls -l cold ms\tvs s3fs (lower is better)")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%.0f\t%s\t%s\t%s\t%.0f\t%s\t%s\t%.1f\t%s\n", r.Kind,
			r.WriteMBs, ratio(r.WriteMBs, s3fs.WriteMBs), ratio(r.WriteMBs, client.WriteMBs),
			r.ReadMBs, ratio(r.ReadMBs, s3fs.ReadMBs), ratio(r.ReadMBs, client.ReadMBs), ratio(r.ReadMBs, floor.ReadMBs),
			r.CreatesPerS, ratio(r.CreatesPerS, s3fs.CreatesPerS), ratio(r.CreatesPerS, client.CreatesPerS),
			r.ListMs, ratio(r.ListMs, s3fs.ListMs))
	}
	return tw.Flush()
}

// s3Server is a versitygw on loopback over a directory, with a client.
type s3Server struct {
	*s3server.Server
	cl *minio.Client
}

func startS3(ctx context.Context, bin, dir string) (*s3Server, error) {
	srv, err := s3server.Start(ctx, s3server.Options{Bin: bin, DataDir: dir, LogPath: dir + ".log"})
	if err != nil {
		return nil, err
	}
	cl, err := minio.New(strings.TrimPrefix(srv.Endpoint, "http://"), &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		_ = srv.Stop()
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	return &s3Server{Server: srv, cl: cl}, nil
}

func (s *s3Server) stop() { _ = s.Stop() }
