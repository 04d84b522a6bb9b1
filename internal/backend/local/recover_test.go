package local

import (
	"os"
	"path/filepath"
	"testing"
)

// A metadata write cut short between its temp file and the rename (test/crash
// local.meta.tmp-written) leaves volume.json.<rand>.tmp beside the
// volume's metadata, or <group>.json.<rand>.tmp among the groups; the next
// start removes them, and nothing else.
func TestRecoverRemovesMetadataTempFiles(t *testing.T) {
	r := newRig(t)
	v := r.create("half-written", 16*MiB, "ext4", false)
	pool := r.b.Dir()
	strays := []string{
		filepath.Join(pool, volumesDir, v.ID, metaFile+".0123456789ab.tmp"),
		filepath.Join(pool, groupsDir, "group-0123.json.a1b2c3d4e5f6.tmp"),
	}
	kept := filepath.Join(pool, groupsDir, "notes.tmp") // not a name volplug writes
	for _, p := range append(strays, kept) {
		if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := New(pool, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, p := range strays {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after a restart: %v", p, err)
		}
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("a file volplug did not write was removed: %v", err)
	}
	if _, err := b.pool.readVolume(v.ID); err != nil {
		t.Errorf("the volume's metadata: %v", err)
	}
}
