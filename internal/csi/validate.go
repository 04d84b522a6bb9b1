package csi

import (
	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/volplug/volplug/internal/csirpc"
)

// The checks themselves live in csirpc, shared with `volplug adapt`; these
// keep this package's names and its one rule: a node-local disk honours the
// single-node access modes only.

const maxNameLen = csirpc.MaxNameLen

// capability is one volume capability, checked and flattened.
type capability struct {
	block      bool
	fsType     string
	mountFlags []string
	readOnly   bool // the access mode only allows reading
}

func flatten(c csirpc.Capability) capability {
	return capability{block: c.Block, fsType: c.FsType, mountFlags: c.MountFlags, readOnly: c.ReadOnly}
}

func checkCapability(c *csi.VolumeCapability) (capability, error) {
	out, err := csirpc.CheckCapability(c, csirpc.SingleNodeModes)
	return flatten(out), err
}

func checkCapabilities(caps []*csi.VolumeCapability) (capability, error) {
	out, err := csirpc.CheckCapabilities(caps, csirpc.SingleNodeModes)
	return flatten(out), err
}

func checkPath(what, p string) (string, error) { return csirpc.CheckPath(what, p) }
func checkID(id string) error                  { return csirpc.CheckID(id) }
func checkVolumePath(p string) (string, error) { return csirpc.CheckVolumePath(p) }
func checkIDAndPath(id, what, path string) (string, error) {
	return csirpc.CheckIDAndPath(id, what, path)
}
