package mounter_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/mounter"
	"github.com/volplug/volplug/internal/testutil"
)

// The mounter is upgraded (a new `volplug mounter --takeover` process
// replaces the old one) three times while a reader and a writer loop on a
// built-in mount, holding handles across: no syscall fails, the old
// process exits each time, and the bucket has what was written.
func TestUpgradeUnderLoad(t *testing.T) {
	testutil.RequireRoot(t)
	s3 := testutil.StartS3Server(t)
	s3.MakeBucket(t, bucket)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	bin := testutil.BuildVolplug(t, dir)
	sock := filepath.Join(dir, "run", "mounter.sock")
	state := filepath.Join(dir, "state")
	client := mounter.NewClient(sock)
	ctx := context.Background()

	start := func(n int) *exec.Cmd {
		log, err := os.Create(filepath.Join(dir, fmt.Sprintf("mounter-%d.log", n)))
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		cmd := exec.Command(bin, "mounter", "--socket", sock, "--state-dir", state, "--takeover")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	waitExit := func(cmd *exec.Cmd) error {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("mounter %d did not exit", cmd.Process.Pid)
		}
	}
	answers := func() {
		for i := 0; ; i++ {
			if _, err := client.List(ctx); err == nil {
				return
			} else if i > 500 {
				t.Fatalf("no mounter answers: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cur := start(0)
	answers()
	target := filepath.Join(dir, "mnt")
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	req := &mounter.Request{Target: target, Kind: mounter.Builtin, FS: bucketfs.Config{
		Endpoint: s3.Endpoint, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey,
		Bucket: bucket, Prefix: "vol", CapacityBytes: 1 << 30,
	}}
	if err := client.Mount(ctx, req); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := client.Unmount(ctx, target); err != nil {
			t.Errorf("unmount: %v", err)
		}
		_ = cur.Process.Signal(syscall.SIGTERM)
		if err := waitExit(cur); err != nil {
			t.Error(err)
		}
	}()
	l := startLoad(t, target, false)
	defer l.close()
	for n := 1; n <= 3; n++ {
		time.Sleep(300 * time.Millisecond)
		next := start(n)
		if err := waitExit(cur); err != nil {
			t.Errorf("upgrade %d: the old mounter: %v", n, err)
		}
		cur = next
		answers()
		list, err := client.List(ctx)
		if err != nil || len(list) != 1 || !list[0].Alive {
			t.Fatalf("upgrade %d: the new mounter lists %+v %v", n, list, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	files, _ := l.finish(t, filepath.Join(s3.Dir, bucket, "vol"))
	t.Logf("%d files written and fsync'd across 3 upgrades", files)
}
