package mounter_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/volplug/volplug/internal/mounter"
	"github.com/volplug/volplug/internal/testutil"
)

// A mounter with a keeper stopped with SIGTERM and no successor (its pod
// replaced at an upgrade) leaves its built-in mounts to the keeper: a
// stat issued while no mounter runs waits, and the next mounter answers
// it; a handle open for reading reads on, one written through before the
// stop (not fsync'd) writes on and closes without EIO, and its data is in
// the bucket; nothing answers ENOTCONN; the state dir is clean after the
// unmount.
func TestTerminateLeavesMountsToKeeper(t *testing.T) {
	e := newCrashEnv(t, time.Minute)
	ctx := context.Background()
	e.startMounter()
	target := e.mount("left")
	p := func(s string) string { return filepath.Join(target, s) }
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	if err := os.WriteFile(p("r"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	rf, err := os.Open(p("r"))
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	buf := make([]byte, 4096)
	if _, err := rf.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	wf, err := os.Create(p("w"))
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	if _, err := wf.Write([]byte("before ")); err != nil {
		t.Fatal(err)
	}

	stopping := time.Now()
	e.stopMounter() // returns once it has exited
	stopped := time.Since(stopping)
	saved, _ := filepath.Glob(filepath.Join(e.state, mounter.Builtin, "*", "request.json"))
	journals, _ := filepath.Glob(filepath.Join(e.state, mounter.Builtin, "*", "journal"))
	if len(saved) != 1 || len(journals) != 1 {
		t.Errorf("after SIGTERM: saved requests %v, journals %v; want one each, for the next mounter", saved, journals)
	}
	stat := make(chan error, 1)
	go func() { _, err := os.Stat(p("not-there")); stat <- err }() // not in any cache: asks the server
	select {
	case err := <-stat:
		t.Fatalf("a stat with no mounter running returned at once: %v, want it to wait for the next one", err)
	case <-time.After(500 * time.Millisecond):
	}

	starting := time.Now()
	e.startMounter()
	select {
	case err := <-stat:
		t.Logf("SIGTERM to exit: %v; the next mounter started and answered the queued stat in %v", stopped, time.Since(starting))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the stat queued meanwhile: %v, want ENOENT from the next mounter", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stat queued meanwhile was not answered by the next mounter")
	}
	if list, err := e.client.List(ctx); err != nil || len(list) != 1 || !list[0].Alive {
		t.Errorf("the next mounter lists %+v %v, want the mount, alive", list, err)
	}
	got := make([]byte, len(data))
	if n, err := rf.ReadAt(got, 0); err != nil || !bytes.Equal(got[:n], data) {
		t.Errorf("the handle open across the stop: %d bytes, %v", n, err)
	}
	if _, err := wf.Write([]byte("after")); err != nil {
		t.Errorf("a write through the handle written before the stop: %v", err)
	}
	if err := wf.Sync(); err != nil { // stored now, not in the background
		t.Errorf("fsync of the handle written before the stop: %v", err)
	}
	if err := wf.Close(); err != nil {
		t.Errorf("close of the handle written before the stop: %v", err)
	}
	if _, err := os.Stat(target); errors.Is(err, syscall.ENOTCONN) {
		t.Error("the mount answers ENOTCONN")
	}
	if err := rf.Close(); err != nil {
		t.Error(err)
	}
	stored, err := os.ReadFile(filepath.Join(e.s3.Dir, bucket, "left", "w"))
	if err != nil || string(stored) != "before after" {
		t.Errorf("the file written across the stop, in the bucket: %q %v", stored, err)
	}
	if err := e.client.Unmount(ctx, target); err != nil {
		t.Errorf("unmount: %v", err)
	}
	e.stopMounter()
	testutil.CheckClean(t, e.dir)
	// The unmount removed the mount's private directory: no saved
	// request (it holds the keys), journal or staging file is left.
	if left, _ := filepath.Glob(filepath.Join(e.state, mounter.Builtin, "*")); len(left) != 0 {
		t.Errorf("state left after the unmount: %v", left)
	}
}
