package bucketfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// store is the bucket, through minio-go: the only file that speaks S3.
type store struct {
	cl     *minio.Client
	core   minio.Core
	bucket string
	cfg    *Config
	keys   *keyring
	gets   atomic.Int64 // GET requests for file data, for tests and metrics
	// lookups and listings count stat's and list's calls, for tests of
	// how many requests finding names costs.
	lookups, listings atomic.Int64
	// getsNow and getsPeak count ranged GETs in flight, and the most at
	// once, for tests of read-ahead's parallelism.
	getsNow, getsPeak atomic.Int64
}

// keyring hands minio-go the current keys, and new ones after SetKeys.
type keyring struct {
	v     atomic.Pointer[credentials.Value]
	stale atomic.Bool // set by a change, cleared when minio-go takes it
}

func newKeyring(access, secret string) *keyring {
	k := &keyring{}
	k.set(access, secret)
	return k
}

func (k *keyring) set(access, secret string) {
	k.v.Store(&credentials.Value{AccessKeyID: access, SecretAccessKey: secret, SignerType: credentials.SignatureV4})
	k.stale.Store(true)
}

func (k *keyring) Retrieve() (credentials.Value, error) {
	k.stale.Store(false)
	return *k.v.Load(), nil
}

func (k *keyring) RetrieveWithCredContext(*credentials.CredContext) (credentials.Value, error) {
	return k.Retrieve()
}

func (k *keyring) IsExpired() bool { return k.stale.Load() }

func newStore(cfg *Config, retries int) (*store, error) {
	return newStoreWithKeys(cfg, retries, newKeyring(cfg.AccessKey, cfg.SecretKey))
}

func newStoreWithKeys(cfg *Config, retries int, keys *keyring) (*store, error) {
	u, _ := url.Parse(cfg.Endpoint) // validated in withDefaults
	secure := u.Scheme == "https"
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("http transport: %w", err)
	}
	// A dead endpoint must fail in seconds, not after the OS's TCP timeout.
	tr.DialContext = (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = time.Minute
	tr.MaxIdleConnsPerHost = 64
	tr.Proxy = nil // loopback and cluster-internal endpoints; never a proxy from the environment
	cl, err := minio.New(u.Host, &minio.Options{
		Creds:      credentials.New(keys),
		Secure:     secure,
		Region:     cfg.Region,
		Transport:  tr,
		MaxRetries: retries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", u.Host, err)
	}
	return &store{cl: cl, core: minio.Core{Client: cl}, bucket: cfg.Bucket, cfg: cfg, keys: keys}, nil
}

// check makes sure the bucket exists and the keys open it. Its client does
// not retry, so wrong keys or a dead endpoint fail within ConnectTimeout.
func (s *store) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	ok, err := s.cl.BucketExists(ctx, s.bucket)
	if err != nil {
		resp := minio.ToErrorResponse(err)
		switch {
		case authFailure(resp):
			return fmt.Errorf("bucket %s at %s: access denied (%s): check the access key and secret: %w",
				s.bucket, s.cfg.Endpoint, resp.Code, err)
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("bucket %s at %s: no answer within %v: %w", s.bucket, s.cfg.Endpoint, s.cfg.ConnectTimeout, err)
		}
		return fmt.Errorf("bucket %s at %s: %w", s.bucket, s.cfg.Endpoint, err)
	}
	if !ok {
		return fmt.Errorf("bucket %s at %s does not exist", s.bucket, s.cfg.Endpoint)
	}
	return nil
}

// entry is what the filesystem knows of a name in a directory.
type entry struct {
	dir   bool
	size  int64
	mtime time.Time
}

// stat finds what key names: an object, a directory (a marker key/ or any
// key under key/), or nothing (ENOENT). An object and a directory of the
// same name: the directory wins, the object stays unreachable.
func (s *store) stat(ctx context.Context, key string) (entry, error) {
	// One listing of the names that begin with key usually settles it
	// (the object "key" and the prefix "key/" are both in it), so a
	// lookup costs one request, found or not.
	s.lookups.Add(1)
	res, err := s.core.ListObjectsV2(s.bucket, key, "", "", "/", 1000)
	if err != nil {
		return entry{}, err
	}
	for _, p := range res.CommonPrefixes {
		if p.Prefix == key+"/" {
			return entry{dir: true}, nil
		}
	}
	if !res.IsTruncated {
		for _, o := range res.Contents {
			if o.Key == key {
				return entry{size: o.Size, mtime: o.LastModified}, nil
			}
		}
		return entry{}, syscall.ENOENT
	}
	// Too many names share the beginning: ask for each directly.
	found, err := s.hasUnder(ctx, key+"/")
	if err != nil {
		return entry{}, err
	}
	if found {
		return entry{dir: true}, nil
	}
	info, err := s.cl.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return entry{}, err
	}
	return entry{size: info.Size, mtime: info.LastModified}, nil
}

// hasUnder says whether any key begins with prefix.
func (s *store) hasUnder(ctx context.Context, prefix string) (bool, error) {
	keys, err := s.firstKeys(ctx, prefix, 1)
	return len(keys) > 0, err
}

// firstKeys returns up to n keys under prefix, recursively.
func (s *store) firstKeys(ctx context.Context, prefix string, n int) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var keys []string
	for obj := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, MaxKeys: n}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		keys = append(keys, obj.Key)
		if len(keys) == n {
			break
		}
	}
	return keys, nil
}

// list returns the entries of the directory whose keys begin with prefix
// (which ends in "/" or is the bucket's root, ""). Names that cannot be
// file names (empty, ".", "..") are left out.
func (s *store) list(ctx context.Context, prefix string) (map[string]entry, error) {
	s.listings.Add(1)
	out := map[string]entry{}
	for obj := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		name := obj.Key[len(prefix):]
		dir := false
		if n := len(name); n > 0 && name[n-1] == '/' {
			dir, name = true, name[:n-1]
		}
		if name == "" || name == "." || name == ".." {
			continue
		}
		if old, ok := out[name]; ok && old.dir {
			continue // a directory hides an object of the same name
		}
		out[name] = entry{dir: dir, size: obj.Size, mtime: obj.LastModified}
	}
	return out, nil
}

// walk calls fn for every key under prefix, recursively.
func (s *store) walk(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	for obj := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		if err := fn(obj.Key, obj.Size); err != nil {
			return err
		}
	}
	return nil
}

// get reads length bytes of key from off.
// The bytes land in buf when it is large enough (buffers are reused, so
// a reader's memory stays at its windows instead of waiting for the GC).
func (s *store) get(ctx context.Context, key string, off, length int64, buf []byte) ([]byte, error) {
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(off, off+length-1); err != nil {
		return nil, err
	}
	s.gets.Add(1)
	now := s.getsNow.Add(1)
	defer s.getsNow.Add(-1)
	for peak := s.getsPeak.Load(); now > peak && !s.getsPeak.CompareAndSwap(peak, now); peak = s.getsPeak.Load() {
	}
	rc, _, _, err := s.core.GetObject(ctx, s.bucket, key, opts)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if int64(cap(buf)) < length {
		buf = make([]byte, length)
	}
	buf = buf[:length]
	n, err := io.ReadFull(rc, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil // the object is shorter than we thought: short read
	}
	return buf[:n], err
}

// download copies the whole object into w.
func (s *store) download(ctx context.Context, key string, w io.Writer) (int64, error) {
	rc, _, _, err := s.core.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(w, rc)
}

// putOpts: payloads go UNSIGNED-PAYLOAD, as minio-go does over https
// anyway. Over http it would otherwise sign every chunk
// (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), which costs CPU, and versitygw
// v1.8.0 misparses such a request when the body is empty (it answers 400
// on the idle connection).
func (s *store) putOpts() minio.PutObjectOptions {
	return minio.PutObjectOptions{
		ContentType:          "application/octet-stream",
		PartSize:             uint64(s.cfg.PartSize),
		NumThreads:           4,
		DisableContentSha256: true,
	}
}

// put uploads size bytes from r; an io.ReaderAt of several parts goes up
// in parallel parts.
func (s *store) put(ctx context.Context, key string, r io.Reader, size int64) error {
	_, err := s.cl.PutObject(ctx, s.bucket, key, r, size, s.putOpts())
	return err
}

func (s *store) remove(ctx context.Context, key string) error {
	return s.cl.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
}

// mark stores an empty object, such as a directory marker.
func (s *store) mark(ctx context.Context, key string) error {
	return s.put(ctx, key, bytes.NewReader(nil), 0)
}

// copy copies an object within the bucket, server side (multipart copy
// above 5 GiB, which one CopyObject cannot do).
func (s *store) copy(ctx context.Context, from, to string, size int64) error {
	src := minio.CopySrcOptions{Bucket: s.bucket, Object: from}
	dst := minio.CopyDestOptions{Bucket: s.bucket, Object: to}
	var err error
	if size > 5<<30 {
		_, err = s.cl.ComposeObject(ctx, dst, src)
	} else {
		_, err = s.cl.CopyObject(ctx, dst, src)
	}
	return err
}

// errno maps a store error to what the kernel gets. The full error is
// logged by the caller; the application sees only the errno.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR // the application gave up (a signal)
	}
	// Network errors wrap errnos too (ECONNREFUSED): to the application
	// they are the store failing, EIO. Other errnos are ours (EFBIG).
	var ue *url.Error
	var oe *net.OpError
	if errors.As(err, &ue) || errors.As(err, &oe) {
		return syscall.EIO
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case authFailure(resp):
		return syscall.EACCES
	case resp.Code == "NoSuchKey" || resp.StatusCode == http.StatusNotFound:
		return syscall.ENOENT
	}
	return syscall.EIO
}

// authFailure says whether the server refused the keys. versitygw answers
// an unknown access key with 404 XAdminUserNotFound, which must not read
// as a missing file.
func authFailure(resp minio.ErrorResponse) bool {
	switch resp.Code {
	case "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "XAdminUserNotFound":
		return true
	}
	return resp.StatusCode == http.StatusForbidden
}
