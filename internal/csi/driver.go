// Package csi serves the Container Storage Interface over gRPC on top of any
// volplug backend. This layer does three things and no storage: it
// validates requests, takes the per-volume lock, and maps backend errors to
// gRPC codes, once, at the boundary.
package csi

import (
	"fmt"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/csirpc"
)

// TopologyKey names the node that holds a volume's data.
const TopologyKey = "topology.volplug.io/node"

// Mode selects which CSI services a process serves.
type Mode string

const (
	ModeAll        Mode = "all"
	ModeController Mode = "controller"
	ModeNode       Mode = "node"
)

// Options configure a Driver.
type Options struct {
	Name    string // e.g. local.csi.volplug.io
	Version string
	NodeID  string
	Mode    Mode
	// EnableAttach makes the driver advertise and require ControllerPublish:
	// a volume must be attached to a node before that node stages it.
	EnableAttach bool
	// MaxVolumesPerNode caps attached volumes per node (0: no cap).
	MaxVolumesPerNode int64
	// ExpandOnNode makes NodeExpandVolume grow the disk as well as the
	// filesystem, and hides ControllerExpandVolume. For deployments where
	// the controller cannot run beside the data: the external-resizer has
	// no per-node mode, and without the controller capability it only
	// records the new size, leaving the work to kubelet on the right node.
	ExpandOnNode bool
	// MetricsAddress serves Prometheus metrics over HTTP ("" for none).
	MetricsAddress string
}

// driverName is the rule csi-sanity and Kubernetes apply to driver names.
var driverName = csirpc.DriverName

// Driver implements the CSI Identity, Controller and Node services.
type Driver struct {
	opts    Options
	backend backend.Backend
	locks   *keyLocks
	metrics *metrics
}

// New checks the options and returns a Driver over b.
func New(opts Options, b backend.Backend) (*Driver, error) {
	if !driverName.MatchString(opts.Name) {
		return nil, fmt.Errorf("driver name %q: must match %s", opts.Name, driverName)
	}
	switch opts.Mode {
	case "":
		opts.Mode = ModeAll
	case ModeAll, ModeController, ModeNode:
	default:
		return nil, fmt.Errorf("mode %q: use all, controller or node", opts.Mode)
	}
	if opts.NodeID == "" {
		// Even a controller-only process needs it: volumes and snapshots
		// are on a node, and their topology names it.
		return nil, fmt.Errorf("a node ID is required")
	}
	if opts.MaxVolumesPerNode < 0 {
		return nil, fmt.Errorf("max volumes per node %d: must not be negative", opts.MaxVolumesPerNode)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.EnableAttach && !b.Capabilities().Attach {
		return nil, fmt.Errorf("--enable-attach: this backend's volumes are not attached to nodes")
	}
	return &Driver{opts: opts, backend: b, locks: newKeyLocks(), metrics: newMetrics()}, nil
}

func (d *Driver) servesController() bool { return d.opts.Mode != ModeNode }
func (d *Driver) servesNode() bool       { return d.opts.Mode != ModeController }
