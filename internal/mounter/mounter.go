// Package mounter is `volplug mounter`: the long-lived process that owns
// the FUSE mounts of object-storage volumes, so that they outlive the CSI
// node plugin. A FUSE mount lives exactly as long as the process serving
// it; a node plugin restarts on every upgrade, crash or `kubectl patch` of
// its DaemonSet, and every pod using a bucket would then see "Transport
// endpoint is not connected". The mounter is its own DaemonSet (or, on one
// machine, a detached process the node plugin starts), changes rarely, and
// does nothing but mount, serve and unmount.
//
// The node plugin talks to it over a unix socket (0600, in a 0700
// directory): JSON over HTTP, one request per call. Secrets travel only
// over that socket; they never reach argv, a log, or a file others can read
// (s3fs's password file is 0600 in a 0700 directory, removed at unmount).
//
// Three kinds of mount: the built-in bucketfs (served by goroutines of this
// process), and s3fs and rclone (child processes in the foreground, so the
// mounter sees them die). Nothing about a mount is kept but in memory and
// in the kernel's mount table: a mounter started anew finds dead mounts
// (ENOTCONN) and replaces them at the next mount request, and adopts live
// ones a predecessor's children still serve. With a keeper (keeper.go),
// built-in mounts also leave their request and a journal of the kernel's
// node table on disk, and survive a crash of this process (recover.go).
package mounter

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/volplug/volplug/internal/bucketfs"
)

// Kinds of mount.
const (
	Builtin = "builtin" // bucketfs, in this process
	S3FS    = "s3fs"
	Rclone  = "rclone"
)

// Request asks for a bucket (or a prefix in it) mounted at Target.
type Request struct {
	Target string          `json:"target"`
	Kind   string          `json:"kind"`
	FS     bucketfs.Config `json:"fs"`
}

// String leaves the keys out.
func (r *Request) String() string {
	return fmt.Sprintf("%s mount of %v at %s", r.Kind, r.FS, r.Target)
}

// Source is what the kernel's mount table shows as the mount's source for
// every kind: "bucket/prefix" ("bucket/" for a whole bucket). The node
// plugin finds a volume from a mount point by it.
func Source(bucket, prefix string) string {
	return bucket + "/" + strings.Trim(prefix, "/")
}

func (r *Request) validate() error {
	if !filepath.IsAbs(r.Target) || filepath.Clean(r.Target) != r.Target {
		return fmt.Errorf("target %q: want a clean absolute path", r.Target)
	}
	switch r.Kind {
	case Builtin, S3FS, Rclone:
	default:
		return fmt.Errorf("mounter %q: want %s, %s or %s", r.Kind, Builtin, S3FS, Rclone)
	}
	if err := bucketfs.ValidateBucket(r.FS.Bucket); err != nil {
		return err
	}
	p, err := bucketfs.NormalizePrefix(r.FS.Prefix)
	if err != nil {
		return err
	}
	r.FS.Prefix = p
	if r.FS.AccessKey == "" || r.FS.SecretKey == "" {
		return fmt.Errorf("access key and secret key are required")
	}
	r.FS.FsName = Source(r.FS.Bucket, r.FS.Prefix)
	// Every kind takes these inside a comma-separated option list (s3fs
	// -o url=...,fsname=...; FUSE's own fsname=): a comma, a quote or a
	// control character there would add options of the request's choosing
	// (suid, dev, passwd_file=...).
	for what, v := range map[string]string{"prefix": r.FS.Prefix, "endpoint": r.FS.Endpoint, "region": r.FS.Region} {
		if strings.ContainsAny(v, ",\"'") || strings.ContainsFunc(v, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
			return fmt.Errorf("%s %q: a comma, quote or control character cannot pass to a mount", what, v)
		}
	}
	// The target is a directory the node plugin made; a symlink there
	// would put the mount wherever it points.
	if fi, err := os.Lstat(r.Target); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("target %q is a symbolic link", r.Target)
	}
	return nil
}

// Status is one mount as the mounter sees it.
type Status struct {
	Target string `json:"target"`
	Kind   string `json:"kind"`
	Source string `json:"source"`
	// Alive is false when the kernel answers ENOTCONN at the target: the
	// process that served it is gone.
	Alive bool `json:"alive"`
	// Adopted mounts were made by an earlier mounter whose child still
	// serves them.
	Adopted       bool  `json:"adopted,omitempty"`
	CapacityBytes int64 `json:"capacityBytes,omitempty"`
	UsedBytes     int64 `json:"usedBytes,omitempty"`
}
