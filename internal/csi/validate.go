package csi

import (
	"path/filepath"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const maxNameLen = 128

// accessModes are the modes a node-local disk can honour: every one of them
// keeps the volume on a single node.
var accessModes = []csi.VolumeCapability_AccessMode_Mode{
	csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
}

// capability is one volume capability, checked and flattened.
type capability struct {
	block      bool
	fsType     string
	mountFlags []string
	readOnly   bool // the access mode only allows reading
}

// checkCapability validates one capability. The error is InvalidArgument
// for a malformed capability and names what a node-local disk cannot do.
func checkCapability(c *csi.VolumeCapability) (capability, error) {
	if c == nil {
		return capability{}, invalid("volume capability is missing")
	}
	mode := c.GetAccessMode().GetMode()
	if c.GetAccessMode() == nil || mode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return capability{}, invalid("volume capability has no access mode")
	}
	if !slices.Contains(accessModes, mode) {
		return capability{}, invalid("access mode %s: a node-local volume can only be used on one node", mode)
	}
	out := capability{readOnly: mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY}
	switch t := c.GetAccessType().(type) {
	case *csi.VolumeCapability_Block:
		out.block = true
	case *csi.VolumeCapability_Mount:
		out.fsType = t.Mount.GetFsType()
		out.mountFlags = t.Mount.GetMountFlags()
		for _, f := range out.mountFlags {
			if f == "" || strings.ContainsAny(f, "\x00\n") {
				return capability{}, invalid("mount flag %q is not valid", f)
			}
		}
	default:
		return capability{}, invalid("volume capability has no access type (block or mount)")
	}
	return out, nil
}

// checkCapabilities validates a list of capabilities for one volume: it
// must be non-empty and cannot ask for both block and mount access, nor for
// two different filesystems.
func checkCapabilities(caps []*csi.VolumeCapability) (capability, error) {
	if len(caps) == 0 {
		return capability{}, invalid("volume capabilities are missing")
	}
	var merged capability
	for i, c := range caps {
		one, err := checkCapability(c)
		if err != nil {
			return capability{}, err
		}
		if i == 0 {
			merged = one
			continue
		}
		if one.block != merged.block {
			return capability{}, invalid("a volume cannot be both block and mount")
		}
		if one.fsType != "" && merged.fsType != "" && one.fsType != merged.fsType {
			return capability{}, invalid("a volume cannot have two filesystems (%s, %s)", merged.fsType, one.fsType)
		}
		if merged.fsType == "" {
			merged.fsType = one.fsType
		}
	}
	return merged, nil
}

// checkPath validates a staging or target path from the CO. Any kubelet
// directory is fine; a relative path or one with ".." is not.
func checkPath(what, p string) (string, error) {
	if p == "" {
		return "", invalid("%s is missing", what)
	}
	if !filepath.IsAbs(p) || strings.ContainsRune(p, 0) || slices.Contains(strings.Split(p, "/"), "..") {
		return "", invalid("%s %q must be an absolute path without '..'", what, p)
	}
	return filepath.Clean(p), nil
}

func checkID(id string) error {
	if id == "" {
		return invalid("volume ID is missing")
	}
	if len(id) > maxNameLen {
		return invalid("volume ID is longer than %d bytes", maxNameLen)
	}
	return nil
}

// checkVolumePath validates the path of a stats or expand request. These
// only read what is mounted there, so a path that cannot hold a volume
// (relative, or with "..") is answered NOT_FOUND, as for any other path
// where the volume is not.
func checkVolumePath(p string) (string, error) {
	if p == "" {
		return "", invalid("volume path is missing")
	}
	clean, err := checkPath("volume path", p)
	if err != nil {
		return "", status.Errorf(codes.NotFound, "no volume at %q: it is not an absolute path", p)
	}
	return clean, nil
}

// checkIDAndPath validates a node request's volume ID, then one of its
// paths, and returns the clean path.
func checkIDAndPath(id, what, path string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	return checkPath(what, path)
}
