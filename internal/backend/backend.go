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
)

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
	// Node is the node that holds the volume's data (its topology).
	Node string `json:"node"`
	// Parameters are the storage-class parameters it was created with.
	Parameters map[string]string `json:"parameters,omitempty"`
	// AttachedTo lists the nodes the volume is attached to (ControllerPublish).
	AttachedTo []string  `json:"attachedTo,omitempty"`
	Created    time.Time `json:"created"`
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
}

// StageRequest prepares a volume on this node (attach, format, mount).
type StageRequest struct {
	ID          string
	StagingPath string
	Block       bool
	FsType      string
	MountFlags  []string
	ReadOnly    bool
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
	DeleteVolume(ctx context.Context, id string) error
	GetVolume(ctx context.Context, id string) (*Volume, error)
	// ListVolumes returns every volume, sorted by ID.
	ListVolumes(ctx context.Context) ([]*Volume, error)
	// Capacity is the size of the largest volume that can still be made.
	Capacity(ctx context.Context) (int64, error)
	// Attach records that the volume is attached to node, failing with
	// ErrLimit when node already has maxPerNode volumes (0: no limit).
	Attach(ctx context.Context, id, node string, maxPerNode int) error
	Detach(ctx context.Context, id, node string) error
}

// Node stages and publishes volumes on the node it runs on.
type Node interface {
	Stage(ctx context.Context, req *StageRequest) error
	Unstage(ctx context.Context, id, stagingPath string) error
	Publish(ctx context.Context, req *PublishRequest) error
	Unpublish(ctx context.Context, id, targetPath string) error
}

// Backend is both halves; `--mode` decides which the CSI layer serves.
type Backend interface {
	Controller
	Node
}
