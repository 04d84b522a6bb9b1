package csirpc

import (
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
		for _, f := range out.MountFlags {
			if f == "" || strings.ContainsAny(f, "\x00\n") {
				return Capability{}, Invalid("mount flag %q is not valid", f)
			}
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

// CheckPath validates a staging or target path from the CO. Any kubelet
// directory is fine; a relative path or one with ".." is not.
func CheckPath(what, p string) (string, error) {
	if p == "" {
		return "", Invalid("%s is missing", what)
	}
	if !filepath.IsAbs(p) || strings.ContainsRune(p, 0) || slices.Contains(strings.Split(p, "/"), "..") {
		return "", Invalid("%s %q must be an absolute path without '..'", what, p)
	}
	return filepath.Clean(p), nil
}

// CheckID validates a volume ID: present, and not longer than a name.
func CheckID(id string) error {
	if id == "" {
		return Invalid("volume ID is missing")
	}
	if len(id) > MaxNameLen {
		return Invalid("volume ID is longer than %d bytes", MaxNameLen)
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
// paths, and returns the clean path.
func CheckIDAndPath(id, what, path string) (string, error) {
	if err := CheckID(id); err != nil {
		return "", err
	}
	return CheckPath(what, path)
}
