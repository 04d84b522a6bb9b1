package local

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// tempMeta is the name writeFileAtomic gives its temp file: the target,
// a random suffix, ".tmp". Only metadata (.json) is written that way.
var tempMeta = regexp.MustCompile(`\.json\.[0-9a-f]{12}\.tmp$`)

// clearTempFiles removes the temp files of metadata writes a crash cut
// short between the write and the rename (the old file is intact beside
// it): in each volume's directory, and among the group files. Snapshot
// metadata is written in .tmp, which recover clears whole.
func (p *pool) clearTempFiles() error {
	dirs, err := filepath.Glob(filepath.Join(p.dir, volumesDir, "*"))
	if err != nil {
		return err
	}
	for _, dir := range append(dirs, filepath.Join(p.dir, groupsDir)) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return err
		}
		for _, e := range entries {
			if e.Type().IsRegular() && tempMeta.MatchString(e.Name()) {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !os.IsNotExist(err) {
					return fmt.Errorf("remove %s: %w", e.Name(), err)
				}
			}
		}
	}
	return nil
}
