// Package local is volplug's node-local backend: every volume is a sparse
// disk image in a pool directory, attached to a loop device when staged, so
// a volume is a real block device with a real size, like a cloud disk.
//
// Pool layout (every volume is one directory, so creating and deleting a
// volume is one atomic rename):
//
//	<pool>/volumes/<id>/volume.json   metadata, replaced atomically
//	<pool>/volumes/<id>/disk.img      the disk image
//	<pool>/volumes/<id>/data          or, layout native, a btrfs subvolume
//	<pool>/.tmp/                      volumes being made (cleared at start)
//	<pool>/.trash/                    volumes being removed (cleared at start)
package local

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/loop"
)

const (
	volumesDir = "volumes"
	tmpDir     = ".tmp"
	trashDir   = ".trash"
	metaFile   = "volume.json"
	imageFile  = "disk.img"
)

// validID is what an ID may look like: no slash and no leading dot, so
// <pool>/volumes/<id> can never name anything outside the pool.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// pool knows where things live and how to read and write metadata safely.
type pool struct {
	dir string
}

func openPool(dir string) (*pool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", dir, err)
	}
	for _, d := range []string{volumesDir, snapshotsDir, groupsDir, tmpDir, trashDir} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("pool %s: %w", dir, err)
		}
	}
	// One spelling of the pool for messages and the paths it hands out.
	// (Loop devices are matched to images by identity, never by path.)
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", dir, err)
	}
	return &pool{dir: real}, nil
}

// recover finishes off what a crash left: half-made and half-removed
// volumes and snapshots, and group members without their group. Only a
// pool's long-running owner calls it, at start; short-lived processes
// sharing the pool (FlexVolume calls) must not, as they would remove
// another process's work in progress.
func (p *pool) recover() error {
	for _, d := range []string{tmpDir, trashDir} {
		entries, err := os.ReadDir(filepath.Join(p.dir, d))
		if err != nil {
			return fmt.Errorf("pool %s: %w", p.dir, err)
		}
		for _, e := range entries {
			// A loop device may still hold an image moved to the trash by
			// an older release that compared paths: removing it would
			// leave a live mount on a deleted file. It waits for the next
			// start, after someone has taken that mount down.
			if d == trashDir {
				if dev, err := loop.Find(filepath.Join(p.dir, d, e.Name(), imageFile)); err != nil || dev != "" {
					continue
				}
			}
			if err := removeTree(filepath.Join(p.dir, d, e.Name())); err != nil {
				return fmt.Errorf("pool %s: clear %s: %w", p.dir, e.Name(), err)
			}
		}
	}
	if err := p.clearOrphans(); err != nil {
		return fmt.Errorf("pool %s: %w", p.dir, err)
	}
	if err := p.clearTempFiles(); err != nil {
		return fmt.Errorf("pool %s: %w", p.dir, err)
	}
	return nil
}

func hashName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:16])
}

// volumeID is derived from the name, so a repeated CreateVolume finds its
// volume by one stat, and a lock on the name is a lock on the ID.
func volumeID(name string) string { return "vol-" + hashName(name) }

// ValidateID checks an ID's form: a name in the pool's directories, never
// a path out of them.
func (b *Backend) ValidateID(id string) error { return checkID(id) }

func checkID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("volume ID %q: must be 1-128 letters, digits, '.', '_' or '-', not starting with '.': %w", id, backend.ErrInvalid)
	}
	return nil
}

func (p *pool) volumeDir(id string) string { return filepath.Join(p.dir, volumesDir, id) }
func (p *pool) image(id string) string     { return filepath.Join(p.volumeDir(id), imageFile) }

// readVolume returns the volume's metadata, wrapping ErrNotFound when there
// is no such volume.
func (p *pool) readVolume(id string) (*backend.Volume, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(p.volumeDir(id), metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: %w", id, backend.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("volume %s: read metadata: %w", id, err)
	}
	var v backend.Volume
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("volume %s: metadata is damaged: %w", id, err)
	}
	return &v, nil
}

// writeVolume replaces the metadata in dir atomically: a reader sees the old
// file or the new one, never half of either, even across a power cut.
func writeVolume(dir string, v *backend.Volume) error {
	return writeJSONAtomic(filepath.Join(dir, metaFile), v)
}

func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

func writeFileAtomic(path string, data []byte) error {
	tmp := fmt.Sprintf("%s.%s.tmp", path, randomSuffix())
	if err := writeSynced(tmp, data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	failpoint.Hit("local.meta.tmp-written")
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// writeSynced creates path (it must not exist), writes data and fsyncs it.
// A file it made and could not finish it removes; one that was there
// already (O_EXCL) it leaves alone.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// writeNewVolume writes the metadata of a volume being made into dir, its
// private directory in .tmp: no temp file and rename, since nothing reads
// the file before dir is renamed into place, and no fsync of dir. The
// file's fsync makes its name durable with it on every filesystem a pool
// can be: ext4 and xfs journal the new entry in the same transaction as
// the new inode, and btrfs logs a new file's entry when it syncs the
// file. What the caller's rename needs is then one fsync of the directory
// the volume is renamed into: two disk flushes for a create, not three.
func writeNewVolume(dir string, v *backend.Volume) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, metaFile)
	if err := writeSynced(path, data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
