package bucketfs

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// Config says what to serve and how. Only Endpoint, AccessKey, SecretKey and
// Bucket are required; zero values take the defaults below.
type Config struct {
	// Endpoint is the S3 server's URL: http://host:port or https://host.
	Endpoint  string
	Region    string // empty: us-east-1
	AccessKey string
	SecretKey string
	Bucket    string
	// Prefix, if set, serves only the keys under it ("a/b" serves "a/b/...").
	Prefix string

	// CapacityBytes is the quota: statfs reports it and writing past it
	// fails with ENOSPC. Zero means 1 PiB (effectively none).
	CapacityBytes int64

	UID, GID uint32
	FileMode os.FileMode // permission bits of every file; 0 means 0644
	DirMode  os.FileMode // permission bits of every directory; 0 means 0755
	ReadOnly bool
	// AllowOther lets users other than the mounter's see the mount (pods
	// do not run as the driver's user).
	AllowOther bool

	// CacheTTL is how long a stat or a directory listing is trusted, both
	// here and in the kernel. Zero means 1 s; negative means no caching.
	CacheTTL time.Duration
	// ConnectTimeout bounds the bucket check at mount. Zero means 5 s.
	ConnectTimeout time.Duration

	// StagingDir holds the temporary files of random writes (a private
	// 0700 directory is made inside it). Empty: os.TempDir().
	StagingDir string
	// JournalPath, when set, is where the kernel table is journaled
	// (0600) for a successor after a crash of this process (Recover).
	// Never sent anywhere: it is the mounter's to set.
	JournalPath string `json:"-"`
	// StagingLimit bounds the bytes of all staged files together; a random
	// write or truncate that would need more fails with EFBIG. Zero: 1 GiB.
	StagingLimit int64

	// PartSize is the multipart upload part size, 5 MiB (S3's minimum)
	// to 1 GiB. A streamed file can have 10,000 parts, so zero picks
	// capacity/10,000 rounded up to a MiB, within 8 to 64 MiB: a file can
	// fill a volume of up to 640 GiB in one stream (larger files: EFBIG).
	PartSize int64
	// UploadConcurrency bounds the parts being uploaded at once, over all
	// files; memory for writes is about PartSize x (files being written +
	// UploadConcurrency). Zero: 128 MiB of parts, 2 to 8 of them.
	UploadConcurrency int
	// ReadAheadMax is the largest read-ahead window of one open file; an
	// open file holds at most two windows. Zero: 8 MiB.
	ReadAheadMax int64
	// ReadParallel is how many ReadAheadMax parts a sustained sequential
	// reader of one file has fetched at once (getstream.go); the parts
	// beyond its first come from a budget of 128 MiB per mount. Zero: 1.
	// On 2 cores one part at a time read faster than four (634 vs 477
	// MB/s through the mounter, same run): the CPU that the server, the
	// kernel and this process share is the bound there, not one
	// connection's pace, which is what parallel parts help.
	ReadParallel int

	// Hidden is a name at the top of the mount that the filesystem does
	// not show, count or let anyone create: the backend's own records
	// (".volplug", its marks of what it made). Empty: nothing is hidden.
	Hidden string

	// FsName is shown as the mount's source in /proc/mounts and df. Empty:
	// "bucket/prefix".
	FsName string
}

// String leaves the keys out, so a Config can be logged or wrapped in an
// error without leaking them.
func (c Config) String() string {
	return fmt.Sprintf("bucketfs{endpoint=%s bucket=%s prefix=%q capacity=%d ro=%v}",
		c.Endpoint, c.Bucket, c.Prefix, c.CapacityBytes, c.ReadOnly)
}

// GoString is String, so %#v does not print the keys either.
func (c Config) GoString() string { return c.String() }

const (
	minPartSize = 5 << 20
	maxParts    = 10000
	maxKeyLen   = 1024 // S3's limit on a key, in bytes
)

// Validate checks c as Mount would, without connecting: for a driver to
// refuse bad volume parameters early.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults validates c and fills in the defaults.
func (c Config) withDefaults() (Config, error) {
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return c, fmt.Errorf("endpoint %q: want http://host[:port] or https://host[:port]", c.Endpoint)
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		return c, errors.New("access key and secret key are required")
	}
	if err := ValidateBucket(c.Bucket); err != nil {
		return c, err
	}
	p, err := NormalizePrefix(c.Prefix)
	if err != nil {
		return c, err
	}
	c.Prefix = p
	if c.CapacityBytes < 0 {
		return c, fmt.Errorf("capacity %d: negative", c.CapacityBytes)
	}
	if c.PartSize == 0 {
		c.PartSize = min(max((c.CapacityBytes/maxParts+(1<<20)-1)&^(1<<20-1), 8<<20), 64<<20)
	}
	if c.CapacityBytes == 0 {
		c.CapacityBytes = 1 << 50
	}
	if c.FileMode == 0 {
		c.FileMode = 0o644
	}
	if c.DirMode == 0 {
		c.DirMode = 0o755
	}
	if c.FileMode&^os.ModePerm != 0 || c.DirMode&^os.ModePerm != 0 {
		return c, fmt.Errorf("file mode %v, dir mode %v: only permission bits", c.FileMode, c.DirMode)
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = time.Second
	}
	if c.CacheTTL < 0 {
		c.CacheTTL = 0
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.StagingDir == "" {
		c.StagingDir = os.TempDir()
	}
	if c.StagingLimit <= 0 {
		c.StagingLimit = 1 << 30
	}
	if c.PartSize < minPartSize || c.PartSize > 1<<30 {
		return c, fmt.Errorf("part size %d: want 5 MiB to 1 GiB", c.PartSize)
	}
	if c.UploadConcurrency <= 0 {
		c.UploadConcurrency = int(min(max((128<<20)/c.PartSize, 2), 8))
	}
	if c.ReadAheadMax <= 0 {
		c.ReadAheadMax = 8 << 20
	}
	if c.ReadAheadMax < 128<<10 {
		c.ReadAheadMax = 128 << 10
	}
	if c.ReadParallel <= 0 {
		c.ReadParallel = 1
	}
	if c.FsName == "" {
		c.FsName = c.Bucket + "/" + strings.TrimSuffix(c.Prefix, "/")
	}
	return c, nil
}

// S3's bucket naming rules (the strict, DNS-compatible set): 3-63
// characters of lowercase letters, digits, dots and hyphens, beginning and
// ending with a letter or digit, not shaped like an IP address.
var (
	bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	ipRE     = regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`)
)

// ValidateBucket checks a bucket name against S3's rules.
func ValidateBucket(b string) error {
	if !bucketRE.MatchString(b) || ipRE.MatchString(b) || strings.Contains(b, "..") {
		return fmt.Errorf("bucket name %q: want 3-63 lowercase letters, digits, dots and hyphens", b)
	}
	return nil
}

// NormalizePrefix checks a prefix and returns it with exactly one trailing
// slash ("" stays ""). Empty, "." and ".." segments are refused: they
// would make keys no path on the mount can name.
func NormalizePrefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	if len(p) > 512 {
		return "", fmt.Errorf("prefix of %d bytes: at most 512", len(p))
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("prefix %q: empty, . or .. segment", p)
		}
		for _, r := range seg {
			if r < 0x20 || r == 0x7f {
				return "", fmt.Errorf("prefix %q: control character", p)
			}
		}
	}
	return p + "/", nil
}
