package bucketfs

import (
	"context"
	"errors"
	"fmt"
)

// Leaving a mount to a keeper. A mounter stopped (SIGTERM) with no
// successor to hand over to, whose mounts a keeper also holds (a pod of the
// mounter replaced at an upgrade, the keeper in a pod of its own), need not
// end them: it stops serving between two requests, stores what was written,
// leaves the journal as it is and closes its fd. The kernel queues requests
// meanwhile; the next mounter takes the fd back from the keeper and serves on
// as after a crash (Recover), but with every handle clean: no write is lost,
// so none fails.

// ErrNoJournal: a mount served without a journal cannot be left.
var ErrNoJournal = errors.New("no journal: a successor could not recover the mount")

// Leave stops serving between two requests, stores what was written and not
// yet stored, and ends this server without unmounting, leaving its journal
// for a successor that recovers the mount (Recover) from an fd another
// process holds. If a file cannot be stored, the server leaves anyway (the
// caller exits) and says so: as after a crash, the handles written through
// since their last fsync fail with EIO after recovery. Without a journal
// (Config.JournalPath) nothing could recover the mount: Leave refuses
// (ErrNoJournal) and the server serves on.
func (s *Server) Leave(ctx context.Context) error {
	if s.conn == nil || s.fsys.cfg.JournalPath == "" {
		return fmt.Errorf("%s: %w", s.mountpoint, ErrNoJournal)
	}
	s.conn.stop()
	err := s.storeAll(ctx)
	if err == nil {
		// Stored: the next server must not fail these handles as a
		// crash's would.
		s.conn.table.cleanAll()
	}
	s.conn.table.stopJournal(false) // the successor's
	s.conn.end()
	if err != nil {
		return fmt.Errorf("left %s with writes not stored (their handles fail with EIO after recovery): %w", s.mountpoint, err)
	}
	return nil
}
