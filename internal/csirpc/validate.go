package csirpc

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxNameLen bounds volume names and IDs, as csi-sanity expects.
const MaxNameLen = 128

// SingleNodeModes are the access modes that keep a volume on one node.
var SingleNodeModes = []csi.VolumeCapability_AccessMode_Mode{
	csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
}

// Capability is one volume capability, checked and flattened.
type Capability struct {
	Block      bool
	FsType     string
	MountFlags []string
	// MountGroup is the fsGroup kubelet asks for (VOLUME_MOUNT_GROUP).
	MountGroup string
	ReadOnly   bool // the access mode only allows reading
}

// CheckCapability validates one capability against the access modes the
// server can honour. The error is InvalidArgument for a malformed
// capability and names what the server cannot do.
func CheckCapability(c *csi.VolumeCapability, modes []csi.VolumeCapability_AccessMode_Mode) (Capability, error) {
	if c == nil {
		return Capability{}, Invalid("volume capability is missing")
	}
	mode := c.GetAccessMode().GetMode()
	if c.GetAccessMode() == nil || mode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return Capability{}, Invalid("volume capability has no access mode")
	}
	if !slices.Contains(modes, mode) {
		return Capability{}, Invalid("access mode %s is not supported (supported: %v)", mode, modes)
	}
	out := Capability{ReadOnly: mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY ||
		mode == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY}
	switch t := c.GetAccessType().(type) {
	case *csi.VolumeCapability_Block:
		out.Block = true
	case *csi.VolumeCapability_Mount:
		out.FsType = t.Mount.GetFsType()
		out.MountFlags = t.Mount.GetMountFlags()
		out.MountGroup = t.Mount.GetVolumeMountGroup()
		if err := CheckFsType(out.FsType); err != nil {
			return Capability{}, err
		}
		if err := CheckMountFlags(out.MountFlags, out.ReadOnly); err != nil {
			return Capability{}, err
		}
	default:
		return Capability{}, Invalid("volume capability has no access type (block or mount)")
	}
	return out, nil
}

// CheckCapabilities validates a list of capabilities for one volume: it
// must be non-empty and cannot ask for both block and mount access, nor for
// two different filesystems.
func CheckCapabilities(caps []*csi.VolumeCapability, modes []csi.VolumeCapability_AccessMode_Mode) (Capability, error) {
	if len(caps) == 0 {
		return Capability{}, Invalid("volume capabilities are missing")
	}
	var merged Capability
	for i, c := range caps {
		one, err := CheckCapability(c, modes)
		if err != nil {
			return Capability{}, err
		}
		if i == 0 {
			merged = one
			continue
		}
		if one.Block != merged.Block {
			return Capability{}, Invalid("a volume cannot be both block and mount")
		}
		if one.FsType != "" && merged.FsType != "" && one.FsType != merged.FsType {
			return Capability{}, Invalid("a volume cannot have two filesystems (%s, %s)", merged.FsType, one.FsType)
		}
		if merged.FsType == "" {
			merged.FsType = one.FsType
		}
	}
	return merged, nil
}

// Linux's limits on a path and on one name in it (PATH_MAX, NAME_MAX).
const (
	MaxPathLen      = 4096
	MaxComponentLen = 255
)

// CheckPath validates a staging or target path from the CO. Any kubelet
// directory is fine; a relative path, one with "..", a control character
// (NUL, newline), or more than the kernel takes is not.
func CheckPath(what, p string) (string, error) {
	if p == "" {
		return "", Invalid("%s is missing", what)
	}
	if !filepath.IsAbs(p) || slices.Contains(strings.Split(p, "/"), "..") || filepath.Clean(p) == "/" {
		return "", Invalid("%s %q must be an absolute path without '..', below the root", what, p)
	}
	if hasControl(p) {
		return "", Invalid("%s %q holds a control character", what, p)
	}
	if len(p) >= MaxPathLen {
		return "", Invalid("%s is %d bytes long: a path is shorter than %d", what, len(p), MaxPathLen)
	}
	for _, name := range strings.Split(p, "/") {
		if len(name) > MaxComponentLen {
			return "", Invalid("%s has a name of %d bytes: at most %d", what, len(name), MaxComponentLen)
		}
	}
	return filepath.Clean(p), nil
}

// CheckNotSymlink refuses a node path whose last name is a symbolic link.
// The CO makes these paths (or their parent) as plain directories or
// files; a symlink there would turn a mount, a mkdir or an unmount at
// the path into one wherever the link points ("/", another mount). A path
// that does not exist yet is fine: the driver makes it.
func CheckNotSymlink(what, p string) error {
	fi, err := os.Lstat(p)
	switch {
	case err != nil:
		// Missing (the driver makes it), or a mount whose FUSE server
		// died (ENOTCONN): unpublish and unstage must still clean it up.
		return nil
	case fi.Mode()&fs.ModeSymlink != 0:
		return Invalid("%s %q is a symbolic link: the CO makes it a directory or a file", what, p)
	}
	return nil
}

// CheckNodePath is CheckPath and CheckNotSymlink.
func CheckNodePath(what, p string) (string, error) {
	clean, err := CheckPath(what, p)
	if err != nil {
		return "", err
	}
	return clean, CheckNotSymlink(what, clean)
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// CheckName validates the name of a volume, snapshot or group snapshot: at
// most 128 bytes (the spec's size limit for a string), no control
// characters. A backend derives IDs from names (hashes, or bucket names
// it checks), so a name never becomes a path by itself.
func CheckName(what, name string) error {
	if name == "" {
		return Invalid("%s name is missing", what)
	}
	if len(name) > MaxNameLen {
		return Invalid("%s name is longer than %d bytes", what, MaxNameLen)
	}
	if hasControl(name) {
		return Invalid("%s name %q holds a control character", what, name)
	}
	return nil
}

// CheckCapacity validates a capacity range: the spec says neither bound
// may be negative (a size over int64 arrives as a negative number).
func CheckCapacity(r *csi.CapacityRange) error {
	if r.GetRequiredBytes() < 0 || r.GetLimitBytes() < 0 {
		return Invalid("capacity range %d-%d: sizes must not be negative", r.GetRequiredBytes(), r.GetLimitBytes())
	}
	return nil
}

// CheckID validates a volume ID: present, not longer than a name, no
// control characters.
func CheckID(id string) error {
	if id == "" {
		return Invalid("volume ID is missing")
	}
	if len(id) > MaxNameLen {
		return Invalid("volume ID is longer than %d bytes", MaxNameLen)
	}
	if hasControl(id) {
		return Invalid("volume ID %q holds a control character", id)
	}
	return nil
}

// CheckVolumePath validates the path of a stats or expand request. These
// only read what is mounted there, so a path that cannot hold a volume
// (relative, or with "..") is answered NOT_FOUND, as for any other path
// where the volume is not.
func CheckVolumePath(p string) (string, error) {
	if p == "" {
		return "", Invalid("volume path is missing")
	}
	clean, err := CheckPath("volume path", p)
	if err != nil {
		return "", status.Errorf(codes.NotFound, "no volume at %q: it is not an absolute path", p)
	}
	return clean, nil
}

// CheckIDAndPath validates a node request's volume ID, then one of its
// paths (CheckNodePath), and returns the clean path.
func CheckIDAndPath(id, what, path string) (string, error) {
	if err := CheckID(id); err != nil {
		return "", err
	}
	return CheckNodePath(what, path)
}
