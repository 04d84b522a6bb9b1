package flexdriver

import (
	"testing"
	"time"
)

// A call that was waiting on a lock file its holder removed (the volume was
// deleted) must not hold that file's lock as if it were the key's: a later
// call locks a new file at the same path, and the two would overlap.
func TestRemovedLockIsTakenAgain(t *testing.T) {
	s, err := newState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unlockA, err := s.lock("vol-1")
	if err != nil {
		t.Fatal(err)
	}
	gotB := make(chan func())
	go func() {
		unlock, err := s.lock("vol-1") // opens A's file, then waits
		if err != nil {
			t.Error(err)
		}
		gotB <- unlock
	}()
	time.Sleep(100 * time.Millisecond) // B is waiting on A's file
	if err := s.removeLock("vol-1"); err != nil {
		t.Fatal(err)
	}
	unlockA()
	// C comes after the removal: a new file. B must wait for C now.
	unlockC, ok := s.tryLock("vol-1")
	if !ok {
		// B may have taken the new file first; then C must not get it.
		unlockB := <-gotB
		if _, ok := s.tryLock("vol-1"); ok {
			t.Fatal("two holders of vol-1")
		}
		unlockB()
		return
	}
	select {
	case unlockB := <-gotB:
		unlockB()
		t.Fatal("B holds the removed file's lock while C holds vol-1")
	case <-time.After(200 * time.Millisecond):
	}
	unlockC()
	select {
	case unlockB := <-gotB:
		unlockB()
	case <-time.After(5 * time.Second):
		t.Fatal("B never got vol-1 after C let it go")
	}
}
