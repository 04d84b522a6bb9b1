package s3

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/minio/minio-go/v7"
	minioCreds "github.com/minio/minio-go/v7/pkg/credentials"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/mounter"
)

// StorageClass parameters (and, for a static volume, PV volumeAttributes).
const (
	paramBucket   = "bucket"   // a shared bucket: a prefix per volume in it
	paramPrefix   = "prefix"   // where in the shared bucket the volumes go
	paramMounter  = "mounter"  // builtin (default), s3fs or rclone
	paramEndpoint = "endpoint" // also a secret's key
	paramRegion   = "region"   // also a secret's key
	paramUID      = "uid"
	paramGID      = "gid"
	paramFileMode = "fileMode" // octal, e.g. 0644
	paramDirMode  = "dirMode"  // octal, e.g. 0755
	// contextCapacity carries the size to the node of a volume whose
	// mark cannot be read there (no node-stage secret), or of a static one.
	contextCapacity = "capacity"
)

// nodeParams are the parameters the node uses; they travel in the volume
// context.
var nodeParams = []string{paramMounter, paramEndpoint, paramRegion, paramUID, paramGID, paramFileMode, paramDirMode}

const defaultSize = 1 << 30

// client returns an S3 client that fails within seconds on a dead
// endpoint and never goes through a proxy from the environment.
func client(c credentials) (*minio.Client, error) {
	u, err := url.Parse(c.endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q: want http://host[:port] or https://host[:port]: %w", c.endpoint, backend.ErrInvalid)
	}
	tr, err := minio.DefaultTransport(u.Scheme == "https")
	if err != nil {
		return nil, err
	}
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = 30 * time.Second
	tr.Proxy = nil
	return minio.New(u.Host, &minio.Options{
		Creds: minioCreds.NewStaticV4(c.accessKey, c.secretKey, ""), Secure: u.Scheme == "https",
		Region: c.region, Transport: tr, MaxRetries: 2,
	})
}

// storageErr names what went wrong talking to the storage, in the
// backend's error kinds.
func storageErr(what string, err error) error {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchBucket":
		return fmt.Errorf("%s: %v: %w", what, err, backend.ErrNotFound)
	case resp.StatusCode == http.StatusForbidden || resp.Code == "AccessDenied" ||
		resp.Code == "SignatureDoesNotMatch" || resp.Code == "InvalidAccessKeyId":
		return fmt.Errorf("%s: access denied (%s): check the access key and secret: %w", what, resp.Code, backend.ErrUnavailable)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", what, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) || strings.Contains(err.Error(), "connection refused") {
		return fmt.Errorf("%s: the endpoint does not answer: %v: %w", what, err, backend.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// checkParams refuses parameters the backend does not know, and values it
// cannot use.
func checkParams(params map[string]string) error {
	for k, v := range params {
		switch k {
		case paramBucket, paramPrefix, paramEndpoint, paramRegion:
			if strings.ContainsAny(v, mountSpecial) || strings.ContainsFunc(v, unicode.IsControl) {
				return fmt.Errorf("%s %q: a comma, quote or control character cannot pass to a mount: %w", k, v, backend.ErrInvalid)
			}
			if _, err := bucketfs.NormalizePrefix(v); k == paramPrefix && err != nil {
				return fmt.Errorf("%s: %v: %w", k, err, backend.ErrInvalid)
			}
		case paramMounter:
			if v != mounter.Builtin && v != mounter.S3FS && v != mounter.Rclone {
				return fmt.Errorf("mounter %q: want %s, %s or %s: %w", v, mounter.Builtin, mounter.S3FS, mounter.Rclone, backend.ErrInvalid)
			}
		case paramUID, paramGID:
			if _, err := strconv.ParseUint(v, 10, 32); err != nil {
				return fmt.Errorf("%s %q: want a number: %w", k, v, backend.ErrInvalid)
			}
		case paramFileMode, paramDirMode:
			if m, err := strconv.ParseUint(v, 8, 32); err != nil || m > 0o777 {
				return fmt.Errorf("%s %q: want octal permission bits such as 0644: %w", k, v, backend.ErrInvalid)
			}
		default:
			return fmt.Errorf("unknown parameter %q (known: bucket, prefix, mounter, endpoint, region, uid, gid, fileMode, dirMode): %w", k, backend.ErrInvalid)
		}
	}
	return nil
}

// CreateVolume makes a bucket for the volume, or a prefix in the
// StorageClass's bucket, and marks it as volplug's. A repeat finds the
// mark and returns the same volume.
func (b *Backend) CreateVolume(ctx context.Context, req *backend.CreateRequest) (*backend.Volume, error) {
	if req.Block {
		return nil, fmt.Errorf("object storage has no raw block volumes: %w", backend.ErrInvalid)
	}
	if req.SourceSnapshot != "" || req.SourceVolume != "" || req.Ephemeral {
		return nil, fmt.Errorf("object storage volumes have no snapshots, clones or inline volumes: %w", backend.ErrUnsupported)
	}
	if err := checkParams(req.Parameters); err != nil {
		return nil, err
	}
	c, err := b.credentialsFrom(req.Secrets, req.Parameters)
	if err != nil {
		return nil, err
	}
	cl, err := client(c)
	if err != nil {
		return nil, err
	}
	size := req.MinSize
	if size == 0 {
		size = defaultSize
		if req.MaxSize > 0 && req.MaxSize < size {
			size = req.MaxSize
		}
	}
	bucket, prefix := bucketName(req.Name), ""
	shared := req.Parameters[paramBucket]
	if shared != "" {
		bucket, prefix = shared, prefixName(shared, strings.Trim(req.Parameters[paramPrefix], "/"), req.Name)
		if _, _, err := parseID(volumeID(bucket, prefix)); err != nil {
			return nil, err
		}
	}
	v := &backend.Volume{ID: volumeID(bucket, prefix), Name: req.Name, Size: size, Parameters: req.Parameters}
	m, err := readMark(ctx, cl, bucket, prefix)
	switch {
	case err == nil:
		if m.Name != req.Name || m.Capacity < req.MinSize || (req.MaxSize > 0 && m.Capacity > req.MaxSize) {
			return nil, fmt.Errorf("volume %s exists with another name or size: %w", v.ID, backend.ErrAlreadyExists)
		}
		v.Size, v.Created = m.Capacity, m.Created
		v.Context = volumeContext(req.Parameters, v.Size)
		return v, nil
	case !errors.Is(err, backend.ErrNotFound):
		return nil, err
	}

	created := false
	exists, err := cl.BucketExists(ctx, bucket)
	if err != nil {
		return nil, storageErr("bucket "+bucket, err)
	}
	switch {
	case shared != "" && !exists:
		return nil, fmt.Errorf("bucket %s, named by the StorageClass, does not exist: make it first: %w", bucket, backend.ErrPrecondition)
	case !exists:
		if err := cl.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: c.region}); err != nil {
			return nil, storageErr("make bucket "+bucket, err)
		}
		created = true
		failpoint.Hit("s3.create.bucket-made")
	}
	// A bucket or prefix that already holds objects and no mark is not
	// ours: refuse it rather than claim someone's data. (An empty one is
	// claimed: a crash between making the bucket and marking it leaves
	// exactly that.)
	if !created {
		if used, err := hasObjects(ctx, cl, bucket, prefix); err != nil {
			return nil, err
		} else if used {
			return nil, fmt.Errorf("%s already holds objects that volplug did not put there: %w", v.ID, backend.ErrAlreadyExists)
		}
	}
	v.Created = time.Now().UTC()
	m = &mark{Name: req.Name, Capacity: size, BucketCreated: prefix == "", Created: v.Created}
	if err := writeMark(ctx, cl, bucket, prefix, m); err != nil {
		return nil, err
	}
	v.Context = volumeContext(req.Parameters, size)
	klog.InfoS("volume created", "volume", v.ID, "name", req.Name, "capacity", size)
	return v, nil
}

// volumeContext is what NodeStage needs besides the ID and the secrets.
func volumeContext(params map[string]string, size int64) map[string]string {
	ctx := map[string]string{contextCapacity: strconv.FormatInt(size, 10)}
	for _, k := range nodeParams {
		if v := params[k]; v != "" {
			ctx[k] = v
		}
	}
	return ctx
}

// DeleteVolume removes the objects of a volume volplug made, then its
// mark, then its bucket if volplug made that too; in that order, so that a
// retry after a crash finds the mark and finishes. A volume without a mark
// (statically provisioned) is left untouched.
func (b *Backend) DeleteVolume(ctx context.Context, id string, secrets backend.Secrets) error {
	bucket, prefix, err := parseID(id)
	if err != nil {
		return err
	}
	c, err := b.credentialsFrom(secrets, nil)
	if err != nil {
		return err
	}
	cl, err := client(c)
	if err != nil {
		return err
	}
	m, err := readMark(ctx, cl, bucket, prefix)
	if errors.Is(err, backend.ErrNotFound) {
		if prefix == "" {
			if err := finishDeleting(ctx, cl, bucket); err != nil {
				return err
			}
		}
		klog.InfoS("delete: no volplug mark, so nothing of it is volplug's to remove", "volume", id)
		return nil
	}
	if err != nil {
		return err
	}
	markObj := markKey(prefix)
	objects := cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true})
	toRemove := make(chan minio.ObjectInfo)
	var listErr error
	go func() {
		defer close(toRemove)
		for o := range objects {
			if o.Err != nil {
				listErr = o.Err
				return
			}
			if o.Key != markObj {
				toRemove <- o
			}
		}
	}()
	for r := range cl.RemoveObjects(ctx, bucket, toRemove, minio.RemoveObjectsOptions{}) {
		if r.Err != nil {
			return storageErr("delete "+r.ObjectName, r.Err)
		}
	}
	if listErr != nil {
		return storageErr("list "+id, listErr)
	}
	// Uploads a writer abandoned (a mount killed mid-write) hold space
	// the objects do not show.
	for u := range cl.ListIncompleteUploads(ctx, bucket, prefix, true) {
		if u.Err != nil {
			klog.InfoS("delete: abandoned uploads could not be listed", "volume", id, "err", u.Err)
			break
		}
		if err := cl.RemoveIncompleteUpload(ctx, bucket, u.Key); err != nil {
			return storageErr("abort an upload of "+u.Key, err)
		}
	}
	failpoint.Hit("s3.delete.objects-removed")
	if m.BucketCreated {
		if err := tagDeleting(ctx, cl, bucket); err != nil {
			return err
		}
	}
	if err := cl.RemoveObject(ctx, bucket, markObj, minio.RemoveObjectOptions{}); err != nil {
		return storageErr("delete the mark of "+id, err)
	}
	failpoint.Hit("s3.delete.mark-removed")
	if m.BucketCreated {
		if err := cl.RemoveBucket(ctx, bucket); err != nil && minio.ToErrorResponse(err).Code != "NoSuchBucket" {
			return storageErr("delete bucket "+bucket, err)
		}
	}
	klog.InfoS("volume deleted", "volume", id, "bucketRemoved", m.BucketCreated)
	return nil
}

// ExpandVolume raises the size in the volume's mark; the node raises the
// mount's quota (NodeExpandVolume).
func (b *Backend) ExpandVolume(ctx context.Context, id string, size int64, secrets backend.Secrets) (int64, bool, error) {
	bucket, prefix, err := parseID(id)
	if err != nil {
		return 0, false, err
	}
	c, err := b.credentialsFrom(secrets, nil)
	if err != nil {
		return 0, false, err
	}
	cl, err := client(c)
	if err != nil {
		return 0, false, err
	}
	m, err := readMark(ctx, cl, bucket, prefix)
	if errors.Is(err, backend.ErrNotFound) {
		return size, true, nil // a static volume: its size lives in the PV alone
	}
	if err != nil {
		return 0, false, err
	}
	if size > m.Capacity {
		m.Capacity = size
		if err := writeMark(ctx, cl, bucket, prefix, m); err != nil {
			return 0, false, err
		}
	}
	return m.Capacity, true, nil
}

// GetVolume reads a volume's mark; a bucket without one is a statically
// provisioned volume of unknown size. It needs the request's secrets.
func (b *Backend) GetVolume(ctx context.Context, id string, secrets backend.Secrets) (*backend.Volume, error) {
	bucket, prefix, err := parseID(id)
	if err != nil {
		return nil, err
	}
	if len(secrets) == 0 {
		return nil, unsupported("a volume's record without credentials")
	}
	c, err := b.credentialsFrom(secrets, nil)
	if err != nil {
		return nil, err
	}
	cl, err := client(c)
	if err != nil {
		return nil, err
	}
	m, err := readMark(ctx, cl, bucket, prefix)
	if err == nil {
		return &backend.Volume{ID: id, Name: m.Name, Size: m.Capacity, Created: m.Created}, nil
	}
	if !errors.Is(err, backend.ErrNotFound) {
		return nil, err
	}
	if ok, err := cl.BucketExists(ctx, bucket); err != nil {
		return nil, storageErr("bucket "+bucket, err)
	} else if !ok {
		return nil, fmt.Errorf("volume %s: %w", id, backend.ErrNotFound)
	}
	return &backend.Volume{ID: id}, nil
}
