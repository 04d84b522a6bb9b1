package bucketfs

import (
	"path/filepath"
	"testing"
)

// A mount left to a keeper has stored what its handles wrote: the journal
// the successor reads says so, and it fails none of them with EIO.
func TestCleanAllJournalsHandlesClean(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	tab := newKernelTable()
	if err := tab.journalTo(path, 0); err != nil {
		t.Fatal(err)
	}
	tab.setInit([]byte("init request"))
	tab.observe(fuseReq(opOpen, 11, u64(0)), append(make([]byte, outHeaderSize), u64(7, 0)...))
	tab.observe(fuseReq(opWrite, 11, u64(7, 0)), make([]byte, outHeaderSize+8))
	if st, err := ReadJournal(path); err != nil || !st.Handles[7].Dirty {
		t.Fatalf("before: %+v %v, want handle 7 dirty", st, err)
	}
	tab.cleanAll()
	tab.stopJournal(false)
	st, err := ReadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := st.Handles[7]; !ok || h.Dirty {
		t.Errorf("after cleanAll the journal has handle 7 as %+v (present %v), want it open and clean", h, ok)
	}
}
