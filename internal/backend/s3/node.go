package s3

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	mountutils "k8s.io/mount-utils"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/internal/mounter"
)

// Stage has the mounter mount the bucket (or prefix) at the staging path,
// with the quota from the volume's mark. Secrets are read now, so a
// rotated key takes effect at the next stage.
func (b *Backend) Stage(ctx context.Context, req *backend.StageRequest) error {
	bucket, prefix, err := parseID(req.ID)
	if err != nil {
		return err
	}
	if req.Block {
		return fmt.Errorf("object storage has no raw block volumes: %w", backend.ErrInvalid)
	}
	if err := checkParams(ownKeys(req.Context)); err != nil {
		return err
	}
	for _, f := range req.MountFlags {
		if f != "ro" {
			return fmt.Errorf("mount flag %q: object-storage volumes take their options from the StorageClass parameters (uid, gid, fileMode, dirMode, mounter): %w", f, backend.ErrInvalid)
		}
	}
	c, err := b.credentialsFrom(req.Secrets, req.Context)
	if err != nil {
		return err
	}
	cl, err := client(c)
	if err != nil {
		return err
	}
	// The mark's capacity wins over the context's (it grew since). Without
	// a mark (a static volume) the bucket must still exist: a stage of a
	// volume that is gone is NOT_FOUND, not a mount error.
	capacity, _ := strconv.ParseInt(req.Context[contextCapacity], 10, 64)
	if m, err := readMark(ctx, cl, bucket, prefix); err == nil {
		capacity = m.Capacity
	} else if !errors.Is(err, backend.ErrNotFound) {
		return err
	} else if ok, err := cl.BucketExists(ctx, bucket); err != nil {
		return storageErr("bucket "+bucket, err)
	} else if !ok {
		return fmt.Errorf("volume %s: bucket %s does not exist: %w", req.ID, bucket, backend.ErrNotFound)
	}
	fs := bucketfs.Config{
		Endpoint: c.endpoint, Region: c.region, AccessKey: c.accessKey, SecretKey: c.secretKey,
		Bucket: bucket, Prefix: prefix, CapacityBytes: capacity,
		ReadOnly:   req.ReadOnly || slices.Contains(req.MountFlags, "ro"),
		AllowOther: true, // pods do not run as the mounter's user
	}
	if prefix == "" {
		fs.Hidden = ".volplug" // the bucket's mark, which the built-in mounter hides
	}
	if err := ownership(&fs, req.Context, req.MountGroup); err != nil {
		return err
	}
	kind := req.Context[paramMounter]
	if kind == "" {
		kind = mounter.Builtin
	}
	// A mount whose server died (the mounter killed mid-mount) is there
	// already; the mounter clears it before mounting again.
	if err := os.MkdirAll(req.StagingPath, 0o700); err != nil && !dead(req.StagingPath) {
		return fmt.Errorf("stage %s: %w", req.ID, err)
	}
	failpoint.Hit("s3.stage.dir-made")
	if err := b.ensureMounter(ctx); err != nil {
		return err
	}
	failpoint.Hit("s3.stage.mounter-running")
	if err := b.mounter.Mount(ctx, &mounter.Request{Target: req.StagingPath, Kind: kind, FS: fs}); err != nil {
		return fmt.Errorf("stage %s: %w", req.ID, mounterErr(err))
	}
	return nil
}

// ownership sets the owner and modes of every file from the volume's
// parameters; a mount group (fsGroup) owns the files and may write them.
func ownership(fs *bucketfs.Config, params map[string]string, group string) error {
	num := func(k string, base int) (uint64, bool) {
		v, err := strconv.ParseUint(params[k], base, 32)
		return v, err == nil
	}
	if v, ok := num(paramUID, 10); ok {
		fs.UID = uint32(v)
	}
	if v, ok := num(paramGID, 10); ok {
		fs.GID = uint32(v)
	}
	fs.FileMode, fs.DirMode = 0o644, 0o755
	if group != "" {
		gid, err := strconv.ParseUint(group, 10, 32)
		if err != nil {
			return fmt.Errorf("volume mount group %q: want a number: %w", group, backend.ErrInvalid)
		}
		fs.GID, fs.FileMode, fs.DirMode = uint32(gid), 0o664, 0o775
	}
	if v, ok := num(paramFileMode, 8); ok {
		fs.FileMode = os.FileMode(v)
	}
	if v, ok := num(paramDirMode, 8); ok {
		fs.DirMode = os.FileMode(v)
	}
	return nil
}

// ownKeys is the volume context without what Kubernetes adds to it (keys
// with a domain, such as storage.kubernetes.io/csiProvisionerIdentity) and
// without the capacity, leaving the parameters.
func ownKeys(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != contextCapacity && !strings.Contains(k, "/") {
			out[k] = v
		}
	}
	return out
}

// ensureMounter starts a mounter when none answers and the driver was
// asked to (one machine); in Kubernetes the mounter's DaemonSet runs it.
func (b *Backend) ensureMounter(ctx context.Context) error {
	if !b.opts.StartMounter {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := b.mounter.EnsureRunning(ctx, b.opts.Exe, b.opts.MounterStateDir, b.opts.MounterLog); err != nil {
		return fmt.Errorf("%v: %w", err, backend.ErrUnavailable)
	}
	return nil
}

// mounterErr maps the mounter's error kinds to the backend's.
func mounterErr(err error) error {
	switch {
	case errors.Is(err, mounter.ErrInvalid):
		return fmt.Errorf("%w: %w", err, backend.ErrInvalid)
	case errors.Is(err, mounter.ErrConflict):
		return fmt.Errorf("%w: %w", err, backend.ErrAlreadyExists)
	case errors.Is(err, mounter.ErrNotFound):
		return fmt.Errorf("%w: %w", err, backend.ErrNotFound)
	case errors.Is(err, mounter.ErrTimeout):
		return fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
	case errors.Is(err, mounter.ErrStorage), errors.Is(err, mounter.ErrUnavailable), errors.Is(err, mounter.ErrBusy):
		return fmt.Errorf("%w: %w", err, backend.ErrUnavailable)
	}
	return err
}

// Unstage has the mounter take the mount down. When no mounter answers
// (it died, and its mounts with it), the dead mount is unmounted here.
func (b *Backend) Unstage(ctx context.Context, id, stagingPath string) error {
	if _, _, err := parseID(id); err != nil {
		return err
	}
	if stagingPath == "" {
		return fmt.Errorf("a staging path is needed: %w", backend.ErrInvalid)
	}
	// Binds of this staging mount (a FUSE mount has a device number of its
	// own, which its binds share) are pods still using it.
	if info, err := b.mount.Mounted(stagingPath); err != nil {
		return err
	} else if info != nil && mount.IsFUSE(info) {
		users, err := mount.SameDevice(info)
		if err != nil {
			return err
		}
		for _, u := range users {
			if u.Mountpoint != stagingPath {
				return fmt.Errorf("volume %s is still published at %s: %w", id, u.Mountpoint, backend.ErrPrecondition)
			}
		}
	}
	failpoint.Hit("s3.unstage.checked")
	err := b.mounter.Unmount(ctx, stagingPath)
	if errors.Is(err, mounter.ErrUnavailable) {
		err = b.mount.Unmount(stagingPath)
	}
	if err != nil {
		return fmt.Errorf("unstage %s: %w", id, mounterErr(err))
	}
	return nil
}

// usersOf lists the mount points that show the volume.
func (b *Backend) usersOf(id string) ([]string, error) {
	bucket, prefix, _ := parseID(id)
	infos, err := mount.BySource(mounter.Source(bucket, prefix))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, i := range infos {
		if mount.IsFUSE(i) {
			out = append(out, i.Mountpoint)
		}
	}
	return out, nil
}

// Publish bind-mounts the staged bucket at the target. A bind of a mount
// whose FUSE server died is dead too, so a dead staging mount is first
// repaired by the mounter, and a dead bind at the target replaced.
func (b *Backend) Publish(ctx context.Context, req *backend.PublishRequest) error {
	bucket, prefix, err := parseID(req.ID)
	if err != nil {
		return err
	}
	if req.Block {
		return fmt.Errorf("object storage has no raw block volumes: %w", backend.ErrInvalid)
	}
	source := mounter.Source(bucket, prefix)
	info, err := b.mount.Mounted(req.StagingPath)
	if err != nil {
		return err
	}
	if info == nil || info.Source != source || !mount.IsFUSE(info) {
		return fmt.Errorf("volume %s is not staged at %s: %w", req.ID, req.StagingPath, backend.ErrPrecondition)
	}
	if dead(req.StagingPath) {
		if err := b.mounter.Repair(ctx, req.StagingPath); err != nil {
			return fmt.Errorf("publish %s: its mount at %s died and could not be repaired (stage it again): %w", req.ID, req.StagingPath, mounterErr(err))
		}
	}
	if at, err := b.mount.Mounted(req.TargetPath); err != nil {
		return err
	} else if at != nil {
		if at.Source != source {
			return fmt.Errorf("%s has %s mounted: %w", req.TargetPath, at.Source, backend.ErrAlreadyExists)
		}
		if !dead(req.TargetPath) {
			if slices.Contains(strings.Split(at.Options, ","), "ro") != req.ReadOnly {
				return fmt.Errorf("%s is already published with other options: %w", req.TargetPath, backend.ErrAlreadyExists)
			}
			return nil
		}
		if err := b.mount.Unmount(req.TargetPath); err != nil {
			return err
		}
	}
	if req.SingleWriter {
		users, err := mount.SameDevice(info)
		if err != nil {
			return err
		}
		for _, u := range users {
			if u.Mountpoint != req.StagingPath && u.Mountpoint != req.TargetPath {
				return fmt.Errorf("volume %s allows a single writer and is published at %s: %w", req.ID, u.Mountpoint, backend.ErrPrecondition)
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(req.TargetPath), 0o700); err != nil {
		return fmt.Errorf("publish %s: %w", req.ID, err)
	}
	if err := os.Mkdir(req.TargetPath, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("publish %s: %w", req.ID, err)
	}
	failpoint.Hit("s3.publish.target-made")
	if err := b.mount.Bind(req.StagingPath, req.TargetPath, req.ReadOnly); err != nil {
		_ = os.Remove(req.TargetPath)
		return fmt.Errorf("publish %s: %w", req.ID, err)
	}
	return nil
}

// dead reports a mount whose FUSE server is gone.
func dead(path string) bool {
	_, err := os.Stat(path)
	return err != nil && mountutils.IsCorruptedMnt(err)
}

// Unpublish unmounts the target (dead or alive) and removes it.
func (b *Backend) Unpublish(ctx context.Context, id, targetPath string) error {
	if _, _, err := parseID(id); err != nil {
		return err
	}
	if err := b.mount.Unmount(targetPath); err != nil {
		return fmt.Errorf("unpublish %s: %w", id, err)
	}
	failpoint.Hit("s3.unpublish.unmounted")
	if err := os.Remove(targetPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpublish %s: %w", id, err)
	}
	return nil
}

// ExpandFilesystem raises the quota of the volume's mount on this node.
func (b *Backend) ExpandFilesystem(ctx context.Context, id, path string, size int64) (int64, error) {
	bucket, prefix, err := parseID(id)
	if err != nil {
		return 0, err
	}
	list, err := b.mounter.List(ctx)
	if err != nil {
		return 0, mounterErr(err)
	}
	for _, m := range list {
		if m.Source != mounter.Source(bucket, prefix) {
			continue
		}
		if size <= 0 {
			return m.CapacityBytes, nil
		}
		if err := b.mounter.SetCapacity(ctx, m.Target, size); err != nil {
			return 0, mounterErr(err)
		}
		return size, nil
	}
	return 0, fmt.Errorf("volume %s is not mounted on this node: %w", id, backend.ErrNotFound)
}

// Stats reports the mount's quota and usage (the built-in mounter's), or
// what s3fs or rclone report.
func (b *Backend) Stats(ctx context.Context, id, path string) (*backend.Stats, error) {
	bucket, prefix, err := parseID(id)
	if err != nil {
		return nil, err
	}
	info, err := b.mount.Mounted(path)
	if err != nil {
		return nil, err
	}
	if info == nil || info.Source != mounter.Source(bucket, prefix) {
		return nil, fmt.Errorf("volume %s is not at %s: %w", id, path, backend.ErrNotFound)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %v: %w", path, err, backend.ErrUnavailable)
	}
	total, free, avail := saturated(st.Blocks, st.Bsize), saturated(st.Bfree, st.Bsize), saturated(st.Bavail, st.Bsize)
	files, ffree := saturated(st.Files, 1), saturated(st.Ffree, 1)
	return &backend.Stats{TotalBytes: total, UsedBytes: total - free, AvailBytes: avail,
		TotalInodes: files, FreeInodes: ffree, UsedInodes: files - ffree}, nil
}

// saturated is n*unit, capped at the largest int64: s3fs reports a
// practically infinite filesystem whose byte count overflows 64 bits,
// which would otherwise reach kubelet as a negative size.
func saturated(n uint64, unit int64) int64 {
	if unit <= 0 {
		return 0
	}
	if n > uint64(math.MaxInt64/unit) {
		return math.MaxInt64
	}
	return int64(n) * unit
}

// NodeHealth reports a mount whose FUSE server died, and a path where the
// CO believes the volume is but it is not.
func (b *Backend) NodeHealth(ctx context.Context, id string, paths ...string) (*backend.Health, error) {
	bucket, prefix, err := parseID(id)
	if err != nil {
		return nil, err
	}
	h := &backend.Health{}
	users, err := b.usersOf(id)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		if p != "" && !slices.Contains(users, p) {
			problem(h, backend.Inaccessible, "the volume should be at %s, but %s is not mounted there", p, mounter.Source(bucket, prefix))
		}
	}
	for _, u := range users {
		if dead(u) {
			problem(h, backend.Inaccessible, "the mount at %s lost its FUSE server (Transport endpoint is not connected): "+
				"a new publish or stage mounts it again; s3fs and rclone mounts cannot fail over", u)
		}
	}
	return h, nil
}

func problem(h *backend.Health, kind backend.ProblemKind, format string, args ...any) {
	h.Problems = append(h.Problems, backend.Problem{Kind: kind, Message: fmt.Sprintf(format, args...)})
}

// VolumeAt names the volume mounted at path, from the mount's source.
func (b *Backend) VolumeAt(ctx context.Context, path string) (string, error) {
	info, err := b.mount.Mounted(path)
	if err != nil || info == nil || !mount.IsFUSE(info) {
		return "", err
	}
	id := strings.TrimSuffix(info.Source, "/")
	if parseIDOK(id) {
		return id, nil
	}
	return "", nil
}

func parseIDOK(id string) bool {
	_, _, err := parseID(id)
	return err == nil
}

// StorageHealth: the mounter must answer.
func (b *Backend) StorageHealth(ctx context.Context) (*backend.Health, error) {
	h := &backend.Health{}
	if _, err := b.mounter.List(ctx); err != nil && !b.opts.StartMounter {
		problem(h, backend.Inaccessible, "no mounter answers at %s: %v", b.opts.MounterSocket, err)
	}
	return h, nil
}
