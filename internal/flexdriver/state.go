package flexdriver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
)

// state is what the driver keeps on the node between calls, under
// <pool>/flex/. Every call is a new process, so locks are flock(2)s on
// files and records are files, each replaced atomically.
//
//	locks/<key>.lock        one per volume (removed with it), plus "pool" for opening and creating
//	records/<kind>-<hash>   a record per mount made and per name attached
//	staging/<volumeID>      where `mount` stages a volume when kubelet did not
type state struct {
	dir string
}

// Kinds of record. A path record lets unmount and unmountdevice find their
// volume when the kernel no longer shows the mount (a crash half-way); a
// name record lets detach, which is given only the PV's name, find a volume
// that was attached by a `volumeID` or `image` option.
const (
	recStage   = "stage"   // key: a device mount path
	recPublish = "publish" // key: a pod volume directory
	recName    = "name"    // key: kubernetes.io/pvOrVolumeName
)

type record struct {
	Kind     string `json:"kind"`
	Key      string `json:"key"`
	VolumeID string `json:"volumeID"`
}

func newState(pool string) (*state, error) {
	s := &state{dir: filepath.Join(pool, "flex")}
	for _, d := range []string{"locks", "records", "staging"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
	}
	return s, nil
}

func (s *state) staging(id string) string { return filepath.Join(s.dir, "staging", id) }

// lock takes an exclusive flock on key, waiting for it. The kernel drops it
// if the process dies, so a crashed call never leaves a volume locked.
func (s *state) lock(key string) (unlock func(), err error) {
	return s.flock(key, unix.LOCK_EX)
}

// tryLock is lock without waiting; ok is false when someone holds key.
func (s *state) tryLock(key string) (unlock func(), ok bool) {
	unlock, err := s.flock(key, unix.LOCK_EX|unix.LOCK_NB)
	return unlock, err == nil
}

// lockKey is what a lock's key may look like: a volume ID or "pool", one
// name in locks/ and nothing else, whatever a caller passed.
var lockKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (s *state) flock(key string, how int) (func(), error) {
	if !lockKey.MatchString(key) {
		return nil, fmt.Errorf("volume ID %q: must be 1-128 letters, digits, '.', '_' or '-', not starting with '.': %w", key, backend.ErrInvalid)
	}
	path := s.lockPath(key)
	for {
		f, err := openLocked(path, how)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", key, err)
		}
		// The holder before may have removed the file (removeLock) after
		// this call opened it: a lock on it would exclude no one who opens
		// the path now, so take the path's file instead.
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", key, err)
		}
		if err := unix.Stat(path, &now); err == nil && now.Ino == held.Ino && now.Dev == held.Dev {
			return func() { f.Close() }, nil // closing the file releases the lock
		}
		f.Close()
	}
}

// openLocked opens (creating) the file at path and flocks it.
func openLocked(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (s *state) lockPath(key string) string { return filepath.Join(s.dir, "locks", key+".lock") }

// removeLock removes key's lock file, for a volume that is gone, so that
// locks/ does not keep a file per volume the node ever had. The caller
// holds the lock; a call waiting on the removed file takes a new one
// (flock).
func (s *state) removeLock(key string) error {
	if err := os.Remove(s.lockPath(key)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("lock %s: %w", key, err)
	}
	return nil
}

func (s *state) recordPath(kind, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(s.dir, "records", kind+"-"+hex.EncodeToString(sum[:16]))
}

func (s *state) put(kind, key, id string) error {
	data, err := json.Marshal(record{Kind: kind, Key: key, VolumeID: id})
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "records"), ".tmp-")
	if err != nil {
		return fmt.Errorf("record %s: %w", key, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.recordPath(kind, key))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("record %s: %w", key, err)
	}
	return nil
}

// get returns the volume ID recorded for key, "" when there is none.
func (s *state) get(kind, key string) (string, error) {
	data, err := os.ReadFile(s.recordPath(kind, key))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("record %s: %w", key, err)
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil || r.Key != key {
		return "", fmt.Errorf("record %s is damaged", key)
	}
	return r.VolumeID, nil
}

func (s *state) del(kind, key string) error {
	if err := os.Remove(s.recordPath(kind, key)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("record %s: %w", key, err)
	}
	return nil
}

// keys returns the keys of every record of kind for volume id.
func (s *state) keys(kind, id string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "records"))
	if err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), kind+"-") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, "records", e.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		var r record
		if json.Unmarshal(data, &r) == nil && r.VolumeID == id {
			out = append(out, r.Key)
		}
	}
	return out, nil
}
