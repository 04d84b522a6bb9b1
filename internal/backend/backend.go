// Package backend says what a volplug storage backend is, in words that owe
// nothing to CSI or FlexVolume: volumes with a size, made and removed by a
// controller, staged and published on a node. The CSI and FlexVolume front
// doors translate their protocols into these calls, so a storage fix lands
// once for both.
//
// Backends return errors that wrap one of the Err* kinds below; the front
// doors turn a kind into a gRPC code or a FlexVolume failure, once, at their
// boundary.
package backend

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Error kinds. Wrap them: fmt.Errorf("volume %s: %w", id, backend.ErrNotFound).
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists with different properties")
	ErrInvalid       = errors.New("invalid argument")
	ErrOutOfRange    = errors.New("size out of range")
	ErrNoSpace       = errors.New("not enough space")
	ErrInUse         = errors.New("in use")
	ErrUnsupported   = errors.New("not supported")
	ErrLimit         = errors.New("limit reached")
	ErrPrecondition  = errors.New("precondition failed")
	// ErrUnavailable: the storage could not be reached or refused the
	// credentials; a retry may succeed.
	ErrUnavailable = errors.New("storage unavailable")
)

// Secrets are the CO's credentials for the storage (CSI secrets). A backend
// that needs none ignores them. They print as their key names only, so a
// request logged or wrapped in an error by mistake leaks nothing.
type Secrets map[string]string

func (s Secrets) String() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return "secrets" + fmt.Sprint(keys)
}

// GoString is String, so %#v does not print the values either.
func (s Secrets) GoString() string { return s.String() }

// Volume is a volume as the backend knows it.
type Volume struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Size is the usable capacity in bytes.
	Size int64 `json:"size"`
	// FsType is the filesystem the volume is formatted with, or will be at
	// its first stage; "" for a volume made for raw block access.
	FsType string `json:"fsType,omitempty"`
	Block  bool   `json:"block,omitempty"`
	// Node is the node that holds the volume's data (its topology), for a
	// backend whose volumes are node-local.
	Node string `json:"node"`
	// Parameters are the storage-class parameters it was created with.
	Parameters map[string]string `json:"parameters,omitempty"`
	// AttachedTo lists the nodes the volume is attached to (ControllerPublish).
	AttachedTo []string `json:"attachedTo,omitempty"`
	// AttachedReadOnly is set when the attachment allows reading only.
	AttachedReadOnly bool `json:"attachedReadOnly,omitempty"`
	// Mutable are the parameters that can change over the volume's life
	// (CSI's VolumeAttributesClass), such as "directIO".
	Mutable map[string]string `json:"mutable,omitempty"`
	Created time.Time         `json:"created"`
	// Source is the snapshot or volume the volume was made from, if any.
	Source string `json:"source,omitempty"`
	// Ephemeral volumes live and die with one pod (CSI inline volumes).
	Ephemeral bool `json:"ephemeral,omitempty"`
	// ResizePending is set when the disk grew while the filesystem on it
	// has not yet: the next stage or node expansion grows it.
	ResizePending bool `json:"resizePending,omitempty"`
	// Formatting marks a first format in progress (see local.formatIfBlank).
	Formatting bool `json:"formatting,omitempty"`
	// Fresh marks a filesystem formatted ahead of its first stage (the
	// local backend's background format) and never mounted since: that
	// stage mounts it without probing or checking it, as nothing else has
	// written there. The stage clears it before mounting.
	Fresh bool `json:"fresh,omitempty"`
	// Shared is set once the image shares blocks with a snapshot or clone
	// (reflink): overwriting them takes new space, so all of Size is
	// counted as promised.
	Shared bool `json:"shared,omitempty"`
	// Layout is how the backend stores the volume, when it has more than
	// one way ("" for its default): the local backend's "native" is a
	// btrfs subvolume with a quota instead of a disk image.
	Layout string `json:"layout,omitempty"`
	// Context is what the node needs to stage the volume, beyond its ID:
	// the CO hands it back at NodeStage (CSI's volume context).
	Context map[string]string `json:"-"`
}

// Snapshot is a point-in-time copy of a volume.
type Snapshot struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	SourceVolumeID string    `json:"sourceVolumeID"`
	Size           int64     `json:"size"`
	FsType         string    `json:"fsType,omitempty"`
	Block          bool      `json:"block,omitempty"`
	GroupID        string    `json:"groupID,omitempty"`
	Layout         string    `json:"layout,omitempty"` // the source volume's
	Created        time.Time `json:"created"`
}

// GroupSnapshot is a set of snapshots taken at one instant.
type GroupSnapshot struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Snapshots []*Snapshot `json:"-"`
	// SnapshotIDs are the members, in the order of the source volumes.
	SnapshotIDs []string  `json:"snapshotIDs"`
	Created     time.Time `json:"created"`
}

// Stats is what a mounted (or raw) volume holds.
type Stats struct {
	Block                               bool
	TotalBytes, UsedBytes, AvailBytes   int64
	TotalInodes, UsedInodes, FreeInodes int64
}

// Health is a volume's condition; Problems is empty when all is well.
type Health struct {
	Problems []Problem
}

// Problem is one thing wrong with a volume.
type Problem struct {
	Kind    ProblemKind
	Message string
}

// ProblemKind says how bad a problem is.
type ProblemKind string

const (
	Degraded     ProblemKind = "degraded"     // usable, but not as it should be
	Inaccessible ProblemKind = "inaccessible" // cannot be used now
	DataLoss     ProblemKind = "data-loss"    // data is gone or damaged
)

// Capabilities says which optional features a backend really has, so the
// front doors advertise nothing they cannot do.
type Capabilities struct {
	// NodeLocal volumes live on one node: topology, and access from that
	// node only. Otherwise any node can use a volume, several at once.
	NodeLocal bool
	// Listing: ListVolumes, GetVolume and Capacity work without secrets.
	Listing bool
	// Attach: Attach and Detach record where a volume is attached.
	Attach bool
	// MountGroup: Stage gives the volume's files to StageRequest.MountGroup
	// (CSI's VOLUME_MOUNT_GROUP, Kubernetes's fsGroup).
	MountGroup     bool
	Snapshots      bool
	GroupSnapshots bool
	Clones         bool
	Expansion      bool
	Stats          bool
	Health         bool
	Block          bool
	Ephemeral      bool
	Modify         bool
}

// CreateRequest asks for a new volume. Size limits are already resolved
// into a range by the front door.
type CreateRequest struct {
	Name       string
	MinSize    int64 // required bytes; 0 means the backend's default
	MaxSize    int64 // 0 means no limit
	FsType     string
	Block      bool
	Parameters map[string]string
	// SourceSnapshot or SourceVolume make the volume a copy of another.
	SourceSnapshot string
	SourceVolume   string
	Ephemeral      bool
	// Mutable are the initial mutable parameters.
	Mutable map[string]string
	Secrets Secrets
}

// StageRequest prepares a volume on this node (attach, format, mount).
type StageRequest struct {
	ID          string
	StagingPath string
	Block       bool
	FsType      string
	MountFlags  []string
	ReadOnly    bool
	// Context is the volume's context from the CO (Volume.Context, or a
	// statically provisioned volume's attributes).
	Context map[string]string
	// MountGroup is a group ID to give the files to ("" for none).
	MountGroup string
	Secrets    Secrets
}

// PublishRequest makes a staged volume visible at TargetPath.
type PublishRequest struct {
	ID          string
	StagingPath string
	TargetPath  string
	Block       bool
	ReadOnly    bool
	// SingleWriter refuses a second publish of the volume on this node.
	SingleWriter bool
}

// Controller makes and removes volumes and records where they are attached.
type Controller interface {
	CreateVolume(ctx context.Context, req *CreateRequest) (*Volume, error)
	DeleteVolume(ctx context.Context, id string, secrets Secrets) error
	// GetVolume returns one volume; secrets are the request's, if it has any.
	GetVolume(ctx context.Context, id string, secrets Secrets) (*Volume, error)
	// ListVolumes returns every volume, sorted by ID.
	ListVolumes(ctx context.Context) ([]*Volume, error)
	// Capacity is the size of the largest volume that can still be made.
	Capacity(ctx context.Context) (int64, error)
	// Attach records that the volume is attached to node, read-only or
	// not, failing with ErrLimit when node already has maxPerNode volumes
	// (0: no limit) and with ErrAlreadyExists when it is attached with the
	// other read-only setting.
	Attach(ctx context.Context, id, node string, readOnly bool, maxPerNode int) error
	// ModifyVolume changes mutable parameters; unknown ones are ErrInvalid.
	ModifyVolume(ctx context.Context, id string, params map[string]string) error
	Detach(ctx context.Context, id, node string) error
	// ExpandVolume grows the volume to at least size and returns its new
	// size, and whether its filesystem must still be grown on the node.
	ExpandVolume(ctx context.Context, id string, size int64, secrets Secrets) (int64, bool, error)
	// VolumeHealth checks what the controller can see of a volume.
	VolumeHealth(ctx context.Context, id string) (*Health, error)

	CreateSnapshot(ctx context.Context, name, sourceID string) (*Snapshot, error)
	DeleteSnapshot(ctx context.Context, id string) error
	GetSnapshot(ctx context.Context, id string) (*Snapshot, error)
	// ListSnapshots returns every snapshot, sorted by ID.
	ListSnapshots(ctx context.Context) ([]*Snapshot, error)
	CreateGroupSnapshot(ctx context.Context, name string, sourceIDs []string) (*GroupSnapshot, error)
	DeleteGroupSnapshot(ctx context.Context, id string) error
	GetGroupSnapshot(ctx context.Context, id string) (*GroupSnapshot, error)
}

// Node stages and publishes volumes on the node it runs on.
type Node interface {
	Stage(ctx context.Context, req *StageRequest) error
	Unstage(ctx context.Context, id, stagingPath string) error
	Publish(ctx context.Context, req *PublishRequest) error
	Unpublish(ctx context.Context, id, targetPath string) error
	// ExpandFilesystem grows what is at path (a staging or target path) to
	// the volume's size (at least size, the CO's new size, when the backend
	// has no size of its own to read) and returns that size.
	ExpandFilesystem(ctx context.Context, id, path string, size int64) (int64, error)
	// Stats reports the volume mounted (or published) at path.
	Stats(ctx context.Context, id, path string) (*Stats, error)
	// NodeHealth checks the volume as this node sees it, including at the
	// paths where the CO believes it is staged or published ("" skipped).
	NodeHealth(ctx context.Context, id string, paths ...string) (*Health, error)
	// VolumeAt names the volume published or staged at path ("" if none).
	VolumeAt(ctx context.Context, path string) (string, error)
	// StorageHealth checks the storage behind every volume of the node.
	StorageHealth(ctx context.Context) (*Health, error)
}

// Backend is both halves; `--mode` decides which the CSI layer serves.
type Backend interface {
	Controller
	Node
	Capabilities() Capabilities
	// ValidateID checks the form of a volume ID (ErrInvalid), so an ID
	// never names anything outside the backend's storage.
	ValidateID(id string) error
}
