package csi

import (
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/volplug/volplug/internal/csirpc"
)

// The checks themselves live in csirpc, shared with `volplug adapt`; these
// keep this package's names and add what depends on the backend: the
// access modes it honours and the form of its IDs.

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

// modes are the access modes the backend honours: node-local volumes the
// single-node ones only, shared storage every mode.
func (d *Driver) modes() []csi.VolumeCapability_AccessMode_Mode {
	if d.backend.Capabilities().NodeLocal {
		return csirpc.SingleNodeModes
	}
	return append(slices.Clone(csirpc.SingleNodeModes),
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
}

func (d *Driver) checkCapability(c *csi.VolumeCapability) (capability, error) {
	out, err := csirpc.CheckCapability(c, d.modes())
	return flatten(out), err
}

func (d *Driver) checkCapabilities(caps []*csi.VolumeCapability) (capability, error) {
	out, err := csirpc.CheckCapabilities(caps, d.modes())
	return flatten(out), err
}

// checkID checks an ID's presence and length, then its form as the
// backend defines it: an ID never names anything outside its storage.
func (d *Driver) checkID(id string) error {
	if err := csirpc.CheckID(id); err != nil {
		return err
	}
	return toStatus(d.backend.ValidateID(id))
}

func (d *Driver) checkIDAndPath(id, what, path string) (string, error) {
	if err := d.checkID(id); err != nil {
		return "", err
	}
	return csirpc.CheckNodePath(what, path)
}

func checkPath(what, p string) (string, error) { return csirpc.CheckPath(what, p) }
func checkVolumePath(p string) (string, error) { return csirpc.CheckVolumePath(p) }
