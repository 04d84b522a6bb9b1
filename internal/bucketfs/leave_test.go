package bucketfs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/volplug/volplug/internal/bucketfs"
)

// A mount served without a journal cannot be left (nothing could recover
// it): Leave refuses and the server serves on. (Leaving with a journal:
// internal/mounter TestTerminateLeavesMountsToKeeper, across processes.)
func TestLeaveWithoutJournalServesOn(t *testing.T) {
	e := newEnv(t)
	srv, mnt := e.mount(t, "m", e.config())
	if err := srv.Leave(context.Background()); !errors.Is(err, bucketfs.ErrNoJournal) {
		t.Fatalf("Leave without a journal: %v, want ErrNoJournal", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Errorf("after a refused Leave: %v", err)
	}
}
