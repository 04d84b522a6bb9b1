package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/failpoint"
)

// Snapshots live beside volumes, one directory each, made and removed by
// one rename like volumes:
//
//	<pool>/snapshots/<id>/snapshot.json, disk.img
//	<pool>/groups/<id>.json            a group: the IDs of its members
const (
	snapshotsDir = "snapshots"
	groupsDir    = "groups"
	snapMeta     = "snapshot.json"
)

func snapshotID(name string) string { return "snap-" + hashName(name) }
func groupID(name string) string    { return "group-" + hashName(name) }

func (p *pool) snapshotDir(id string) string { return filepath.Join(p.dir, snapshotsDir, id) }
func (p *pool) groupFile(id string) string {
	return filepath.Join(p.dir, groupsDir, id+".json")
}

func (p *pool) readSnapshot(id string) (*backend.Snapshot, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var s backend.Snapshot
	if err := readJSON(filepath.Join(p.snapshotDir(id), snapMeta), &s); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	return &s, nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return backend.ErrNotFound
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("damaged metadata %s: %w", path, err)
	}
	return nil
}

// CreateSnapshot copies the volume's image at one instant (see quiesce).
func (b *Backend) CreateSnapshot(ctx context.Context, name, sourceID string) (*backend.Snapshot, error) {
	id := snapshotID(name)
	if s, err := b.pool.readSnapshot(id); err == nil {
		if s.SourceVolumeID != sourceID || s.Name != name {
			return nil, fmt.Errorf("snapshot %q of another volume: %w", name, backend.ErrAlreadyExists)
		}
		return s, nil
	} else if !errors.Is(err, backend.ErrNotFound) {
		return nil, err
	}
	if err := b.waitFormat(ctx, sourceID); err != nil { // the format rewrites the metadata
		return nil, err
	}
	v, err := b.pool.readVolume(sourceID)
	if err != nil {
		return nil, err
	}
	snaps, err := b.snapshotVolumes(ctx, []*backend.Volume{v}, []string{id}, []string{name}, "")
	if err != nil {
		return nil, err
	}
	return snaps[0], nil
}

// snapshotVolumes copies each volume into a snapshot with the given ID and
// name, all inside one quiesce, so a group is consistent across members.
func (b *Backend) snapshotVolumes(ctx context.Context, vols []*backend.Volume, ids, names []string, group string) ([]*backend.Snapshot, error) {
	var need int64
	for _, v := range vols {
		if !isNative(v) { // a subvolume snapshot shares every block
			need += v.Size
		}
	}
	release, err := b.reserveSpace(need)
	if err != nil {
		return nil, err
	}
	defer release()

	tmps := make([]string, len(vols))
	defer func() {
		for _, t := range tmps {
			if t != "" {
				_ = removeTree(t)
			}
		}
	}()
	for i, v := range vols {
		tmps[i] = filepath.Join(b.pool.dir, tmpDir, ids[i]+"."+randomSuffix())
		if err := os.Mkdir(tmps[i], 0o700); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", v.ID, err)
		}
	}

	failpoint.Hit("local.snapshot.dirs-made")
	thaw, err := b.quiesce(vols)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	shared := make([]bool, len(vols))
	for i, v := range vols {
		if isNative(v) {
			err = snapshotSubvolume(b.pool.subvol(v.ID), filepath.Join(tmps[i], subvolName), true)
		} else {
			shared[i], err = cloneImage(b.pool.image(v.ID), filepath.Join(tmps[i], imageFile))
		}
		if err != nil {
			break
		}
		failpoint.Hit("local.snapshot.member-copied")
	}
	failpoint.Hit("local.snapshot.copied")
	thaw()
	if err != nil {
		return nil, err
	}

	snaps := make([]*backend.Snapshot, len(vols))
	for i, v := range vols {
		snaps[i] = &backend.Snapshot{
			ID: ids[i], Name: names[i], SourceVolumeID: v.ID, Size: v.Size,
			FsType: v.FsType, Block: v.Block, GroupID: group, Created: now, Layout: v.Layout,
		}
		if err := writeJSONAtomic(filepath.Join(tmps[i], snapMeta), snaps[i]); err != nil {
			return nil, err
		}
		if shared[i] && !v.Shared {
			v.Shared = true
			if err := writeVolume(b.pool.volumeDir(v.ID), v); err != nil {
				return nil, err
			}
		}
	}
	failpoint.Hit("local.snapshot.meta-written")
	for i := range vols {
		if err := os.Rename(tmps[i], b.pool.snapshotDir(ids[i])); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", ids[i], err)
		}
		tmps[i] = ""
		failpoint.Hit("local.snapshot.renamed")
	}
	return snaps, syncDir(filepath.Join(b.pool.dir, snapshotsDir))
}

// DeleteSnapshot removes a snapshot. A member of a group goes with its group.
func (b *Backend) DeleteSnapshot(ctx context.Context, id string) error {
	s, err := b.pool.readSnapshot(id)
	if errors.Is(err, backend.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if s.GroupID != "" {
		if _, err := os.Stat(b.pool.groupFile(s.GroupID)); err == nil {
			return fmt.Errorf("snapshot %s belongs to group %s: delete the group: %w", id, s.GroupID, backend.ErrPrecondition)
		}
	}
	return b.removeDir(b.pool.snapshotDir(id))
}

// removeDir renames dir into the trash, then removes it: the object is
// gone at the rename, even if the removal is cut short.
func (b *Backend) removeDir(dir string) error {
	trash := filepath.Join(b.pool.dir, trashDir, filepath.Base(dir)+"."+randomSuffix())
	if err := os.Rename(dir, trash); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	failpoint.Hit("local.removedir.trashed")
	return removeTree(trash)
}

func (b *Backend) GetSnapshot(ctx context.Context, id string) (*backend.Snapshot, error) {
	return b.pool.readSnapshot(id)
}

// ListSnapshots returns every snapshot, sorted by ID.
func (b *Backend) ListSnapshots(ctx context.Context) ([]*backend.Snapshot, error) {
	entries, err := os.ReadDir(filepath.Join(b.pool.dir, snapshotsDir))
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	out := make([]*backend.Snapshot, 0, len(entries))
	for _, e := range entries {
		s, err := b.pool.readSnapshot(e.Name())
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// CreateGroupSnapshot snapshots every volume at the same instant: all
// member filesystems are frozen together before the first copy starts.
func (b *Backend) CreateGroupSnapshot(ctx context.Context, name string, sourceIDs []string) (*backend.GroupSnapshot, error) {
	gid := groupID(name)
	if g, err := b.GetGroupSnapshot(ctx, gid); err == nil {
		var have []string
		for _, s := range g.Snapshots {
			have = append(have, s.SourceVolumeID)
		}
		if !sameSet(have, sourceIDs) || g.Name != name {
			return nil, fmt.Errorf("group snapshot %q of other volumes: %w", name, backend.ErrAlreadyExists)
		}
		return g, nil
	} else if !errors.Is(err, backend.ErrNotFound) {
		return nil, err
	}
	vols := make([]*backend.Volume, len(sourceIDs))
	ids := make([]string, len(sourceIDs))
	names := make([]string, len(sourceIDs))
	for i, src := range sourceIDs {
		if err := b.waitFormat(ctx, src); err != nil { // the format rewrites the metadata
			return nil, err
		}
		v, err := b.pool.readVolume(src)
		if err != nil {
			return nil, err
		}
		vols[i] = v
		names[i] = name + "/" + src
		ids[i] = snapshotID(names[i])
	}
	snaps, err := b.snapshotVolumes(ctx, vols, ids, names, gid)
	if err != nil {
		return nil, err
	}
	g := &backend.GroupSnapshot{ID: gid, Name: name, SnapshotIDs: ids, Snapshots: snaps, Created: snaps[0].Created}
	// The group exists once its file does; members written before a crash
	// without it are removed at the next start (see clearOrphans).
	failpoint.Hit("local.group.members-made")
	if err := writeJSONAtomic(b.pool.groupFile(gid), g); err != nil {
		return nil, err
	}
	return g, nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func (b *Backend) GetGroupSnapshot(ctx context.Context, id string) (*backend.GroupSnapshot, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var g backend.GroupSnapshot
	if err := readJSON(b.pool.groupFile(id), &g); err != nil {
		return nil, fmt.Errorf("group snapshot %s: %w", id, err)
	}
	for _, sid := range g.SnapshotIDs {
		s, err := b.pool.readSnapshot(sid)
		if err != nil {
			return nil, fmt.Errorf("group snapshot %s: member %w", id, err)
		}
		g.Snapshots = append(g.Snapshots, s)
	}
	return &g, nil
}

// DeleteGroupSnapshot removes the group, then its members.
func (b *Backend) DeleteGroupSnapshot(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	var g backend.GroupSnapshot
	err := readJSON(b.pool.groupFile(id), &g)
	if errors.Is(err, backend.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.Remove(b.pool.groupFile(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete group snapshot %s: %w", id, err)
	}
	failpoint.Hit("local.group.file-removed")
	for _, sid := range g.SnapshotIDs {
		if err := b.removeDir(b.pool.snapshotDir(sid)); err != nil {
			return err
		}
	}
	return nil
}

// clearOrphans removes group members whose group file is gone: what a
// crash in the middle of creating or deleting a group leaves.
func (p *pool) clearOrphans() error {
	entries, err := os.ReadDir(filepath.Join(p.dir, snapshotsDir))
	if err != nil {
		return err
	}
	for _, e := range entries {
		s, err := p.readSnapshot(e.Name())
		if err != nil || s.GroupID == "" {
			continue
		}
		if _, err := os.Stat(p.groupFile(s.GroupID)); errors.Is(err, os.ErrNotExist) {
			if err := removeTree(p.snapshotDir(s.ID)); err != nil {
				return err
			}
		}
	}
	return nil
}
