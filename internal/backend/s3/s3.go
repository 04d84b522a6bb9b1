// Package s3 is the object-storage backend: a volume is an S3 (or COS)
// bucket, or a prefix in a bucket the StorageClass names, mounted on a node
// through FUSE by `volplug mounter` (internal/mounter), so that mounts
// outlive the CSI node plugin.
//
// Volume IDs are "bucket" (a bucket per volume) or "bucket/prefix" (a
// prefix per volume); a statically provisioned volume's volumeHandle has
// the same form. What volplug creates it marks: the object
// .volplug/volume.json in a bucket it made, .volplug/volumes/<prefix>.json
// beside a prefix it made. DeleteVolume removes exactly what a mark says
// volplug made, and nothing of a volume without a mark.
//
// Credentials come with each request, from CSI secrets (accessKeyID,
// secretAccessKey, endpoint, region; COS's SecretId and SecretKey too).
// The controller has none for ListVolumes, GetVolume or GetCapacity, so
// the backend does not offer them.
package s3

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/internal/mounter"
)

// Options configure the backend.
type Options struct {
	// Endpoint and Region are used when neither the secrets nor the
	// volume's parameters give one.
	Endpoint, Region string
	// MounterSocket is where `volplug mounter` answers. When none does,
	// Exe (this binary) is started as one, with MounterStateDir and
	// MounterLog, unless StartMounter is false (Kubernetes, where the
	// mounter is a DaemonSet of its own).
	MounterSocket, MounterStateDir, MounterLog, Exe string
	StartMounter                                    bool
}

// Backend serves volumes from S3-compatible object storage.
type Backend struct {
	opts    Options
	mounter *mounter.Client
	mount   *mount.Mounter
}

// New returns the backend.
func New(opts Options) *Backend {
	return &Backend{opts: opts, mounter: mounter.NewClient(opts.MounterSocket), mount: mount.New()}
}

// Capabilities: a bucket can be shared by many nodes and grown (the
// built-in mounter's quota); there are no snapshots, clones or raw blocks.
func (b *Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{Expansion: true, Stats: true, Health: true, MountGroup: true}
}

// ValidateID checks "bucket" or "bucket/prefix".
func (b *Backend) ValidateID(id string) error {
	_, _, err := parseID(id)
	return err
}

// parseID splits a volume ID into its bucket and its prefix ("" for a
// whole bucket, else ending in "/").
func parseID(id string) (bucket, prefix string, err error) {
	bucket, rest, _ := strings.Cut(id, "/")
	if err := bucketfs.ValidateBucket(bucket); err != nil {
		return "", "", fmt.Errorf("volume ID %q: %v: %w", id, err, backend.ErrInvalid)
	}
	if prefix, err = bucketfs.NormalizePrefix(rest); err != nil {
		return "", "", fmt.Errorf("volume ID %q: %v: %w", id, err, backend.ErrInvalid)
	}
	if strings.ContainsAny(prefix, mountSpecial) {
		return "", "", fmt.Errorf("volume ID %q: a comma or quote cannot pass to a mount's options: %w", id, backend.ErrInvalid)
	}
	if len(id) > maxIDLen {
		return "", "", fmt.Errorf("volume ID %q: longer than %d bytes: %w", id, maxIDLen, backend.ErrInvalid)
	}
	if id != volumeID(bucket, prefix) { // one volume, one ID: "b/" is not "b"
		return "", "", fmt.Errorf("volume ID %q: not in canonical form %q: %w", id, bucket+"/"+strings.TrimSuffix(prefix, "/"), backend.ErrInvalid)
	}
	return bucket, prefix, nil
}

// mountSpecial are the characters a mount option list cannot carry in a
// value: s3fs and FUSE take the prefix and endpoint in "-o a=b,c=d".
const mountSpecial = ",\"'"

func volumeID(bucket, prefix string) string {
	if prefix == "" {
		return bucket
	}
	return bucket + "/" + strings.TrimSuffix(prefix, "/")
}

// credentials are what a request's secrets say about reaching the storage.
type credentials struct {
	endpoint, region, accessKey, secretKey string
}

// Secret keys, as the peers name them (COS's too).
var (
	accessKeys = []string{"accessKeyID", "accessKeyId", "SecretId"}
	secretKeys = []string{"secretAccessKey", "SecretKey"}
)

// credentialsFrom reads credentials from secrets, then the volume's
// parameters (endpoint and region only: keys never sit in a
// StorageClass), then the driver's defaults.
func (b *Backend) credentialsFrom(secrets backend.Secrets, params map[string]string) (credentials, error) {
	c := credentials{endpoint: b.opts.Endpoint, region: b.opts.Region}
	for _, src := range []map[string]string{params, secrets} {
		if v := src[paramEndpoint]; v != "" {
			c.endpoint = v
		}
		if v := src[paramRegion]; v != "" {
			c.region = v
		}
	}
	for _, k := range accessKeys {
		if v := secrets[k]; v != "" {
			c.accessKey = v
		}
	}
	for _, k := range secretKeys {
		if v := secrets[k]; v != "" {
			c.secretKey = v
		}
	}
	switch {
	case c.accessKey == "" || c.secretKey == "":
		return c, fmt.Errorf("the secrets hold no access key (accessKeyID or SecretId) and secret (secretAccessKey or SecretKey): %w", backend.ErrInvalid)
	case c.endpoint == "":
		return c, fmt.Errorf("no S3 endpoint: put one in the secret or the StorageClass (endpoint), or start the driver with --s3-endpoint: %w", backend.ErrInvalid)
	}
	return c, nil
}

// bucketName names a bucket for a volume name: the name itself when it is
// a valid bucket name, else a digest of it.
func bucketName(name string) string {
	if bucketfs.ValidateBucket(name) == nil && !strings.HasPrefix(name, "xn--") {
		return name
	}
	return "volplug-" + digest(name)
}

// prefixName names a volume's prefix in a shared bucket: the volume's
// name, or a digest of it where the name could not be a key's segment or
// would make the ID longer than CSI's 128 bytes.
func prefixName(bucket, base, name string) string {
	seg := name
	if len(bucket)+len(base)+len(seg)+2 > maxIDLen || seg == "." || seg == ".." || strings.ContainsAny(seg, "/\\") || strings.IndexFunc(seg, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		seg = "volplug-" + digest(name)
	}
	if base = strings.Trim(base, "/"); base != "" {
		return base + "/" + seg + "/"
	}
	return seg + "/"
}

// maxIDLen is the longest volume ID a CO must accept.
const maxIDLen = 128

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:12])
}

var _ backend.Backend = (*Backend)(nil)
