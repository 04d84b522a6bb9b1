package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/testutil"
)

// At start-up, a format a stop cut short and a blank volume never
// formatted are formatted in the background; a volume holding data
// without the mark, and a raw block volume, are left alone.
func TestFormatRequeuedAtStart(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	poolDir := filepath.Join(dir, "pool")
	ctx := context.Background()
	b, err := New(poolDir, "node-a", FormatOnCreate(false))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dir: dir, b: b}
	blank := r.create("blank", 64*MiB, "ext4", false)
	cut := r.create("cut-short", 64*MiB, "ext4", false)
	data := r.create("data", 64*MiB, "ext4", false)
	block := r.create("block", 64*MiB, "", true)
	// A format cut short: the mark is set and mkfs wrote some blocks.
	v, err := b.pool.readVolume(cut.ID)
	r.must(err)
	v.Formatting = true
	r.must(writeVolume(b.pool.volumeDir(v.ID), v))
	junk := bytes.Repeat([]byte{0xa5}, 64<<10)
	r.must(writeAt(b.pool.image(cut.ID), junk, 1<<20))
	// Data no format of ours wrote.
	r.must(writeAt(b.pool.image(data.ID), junk, 1<<20))
	r.must(writeAt(b.pool.image(block.ID), junk, 1<<20))
	r.must(b.Close())

	b, err = New(poolDir, "node-a", FormatOnCreate(true))
	r.must(err)
	r.b = b
	defer b.Close()
	for _, id := range []string{blank.ID, cut.ID, data.ID, block.ID} {
		r.must(b.waitFormat(ctx, id))
	}
	for _, id := range []string{blank.ID, cut.ID} {
		got, err := b.pool.readVolume(id)
		r.must(err)
		if fs, err := b.mount.DiskFormat(b.pool.image(id)); err != nil || fs != "ext4" || got.Formatting || !got.Fresh {
			t.Errorf("%s: holds %q (%v), formatting %v, fresh %v; want a fresh ext4", got.Name, fs, err, got.Formatting, got.Fresh)
		}
	}
	for _, id := range []string{data.ID, block.ID} {
		buf := make([]byte, len(junk))
		f, err := os.Open(b.pool.image(id))
		r.must(err)
		_, err = f.ReadAt(buf, 1<<20)
		f.Close()
		r.must(err)
		if !bytes.Equal(buf, junk) {
			t.Errorf("volume %s: its data was overwritten at start-up", id)
		}
	}
	// The requeued volume stages like any other.
	r.must(r.stage(blank, false))
	r.down(blank)
	for _, v := range []*backend.Volume{cut, data, block} {
		r.must(b.DeleteVolume(ctx, v.ID, nil))
	}
	testutil.CheckClean(t, dir)
}
