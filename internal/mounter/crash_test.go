package mounter_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/volplug/volplug/internal/bucketfs"
	"github.com/volplug/volplug/internal/mounter"
	"github.com/volplug/volplug/internal/testutil"
)

// crashEnv runs the real processes of crash failover: a keeper and
// mounters (`volplug mounter --keeper-socket`), against versitygw.
type crashEnv struct {
	tb        testing.TB
	s3        *testutil.S3Server
	dir       string
	bin       string
	sock      string
	state     string
	keeper    *spawner // of the keeper
	keeperPid int
	spawner   *spawner // of the mounters
	running   bool
	pid       int // the current mounter's
	client    *mounter.Client
}

func newCrashEnv(tb testing.TB, grace time.Duration) *crashEnv {
	testutil.RequireRoot(tb)
	s3 := testutil.StartS3Server(tb)
	s3.MakeBucket(tb, bucket)
	dir := tb.TempDir()
	tb.Cleanup(func() { testutil.Cleanup(dir) })
	e := &crashEnv{tb: tb, s3: s3, dir: dir, bin: testutil.BuildVolplug(tb, dir),
		sock: filepath.Join(dir, "run", "mounter.sock"), state: filepath.Join(dir, "state")}
	e.client = mounter.NewClient(e.sock)
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, log := range []string{"keeper.log", "mounter.log"} {
				out, _ := os.ReadFile(filepath.Join(dir, log))
				if d := os.Getenv("VOLPLUG_CRASH_LOGS"); d != "" {
					_ = os.WriteFile(filepath.Join(d, log), out, 0o600)
				}
				if len(out) > 6000 {
					out = out[len(out)-6000:]
				}
				tb.Logf("%s:\n%s", log, out)
			}
		}
	})
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o700); err != nil {
		tb.Fatal(err)
	}
	e.keeper = newSpawner(tb, e.bin, filepath.Join(dir, "keeper.log"), "keeper", "--socket", e.keeperSock(), "--grace", grace.String())
	e.keeperPid, _ = strconv.Atoi(e.keeper.do("start"))
	e.spawner = newSpawner(tb, e.bin, filepath.Join(dir, "mounter.log"),
		"mounter", "--socket", e.sock, "--state-dir", e.state, "--keeper-socket", e.keeperSock())
	for i := 0; ; i++ { // the keeper answers
		if _, err := os.Stat(e.keeperSock()); err == nil {
			break
		} else if i > 500 {
			tb.Fatal("the keeper does not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return e
}

func (e *crashEnv) keeperSock() string { return filepath.Join(e.dir, "run", "keeper.sock") }

// startMounter starts a mounter and waits until it answers.
func (e *crashEnv) startMounter() {
	e.pid, _ = strconv.Atoi(e.spawner.do("start"))
	e.running = true
	for i := 0; ; i++ {
		if _, err := e.client.List(context.Background()); err == nil {
			return
		} else if i > 1000 {
			e.tb.Fatalf("no mounter answers: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill kills the current mounter with SIGKILL and waits until it is gone.
func (e *crashEnv) kill() {
	e.spawner.do("kill")
	e.running = false
}

// restartKeeper kills the keeper and starts another, which holds nothing
// until the mounter notices (it checks every 2 s) and hands it every
// built-in mount again; it returns once the new one holds target.
func (e *crashEnv) restartKeeper(target string) {
	e.keeper.do("kill")
	log := filepath.Join(e.dir, "keeper.log")
	before, _ := os.ReadFile(log)
	e.keeperPid, _ = strconv.Atoi(e.keeper.do("start"))
	for i := 0; ; i++ {
		after, _ := os.ReadFile(log)
		if len(after) > len(before) && bytes.Contains(after[len(before):], []byte(`"keeper: holding" target="`+target+`"`)) {
			return
		} else if i > 1000 {
			e.tb.Fatalf("the new keeper was not handed %s", target)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// upgrade replaces the current mounter by a successor (--takeover).
func (e *crashEnv) upgrade() {
	e.pid, _ = strconv.Atoi(e.spawner.do("upgrade"))
	for i := 0; ; i++ {
		if list, err := e.client.List(context.Background()); err == nil && len(list) > 0 {
			return
		} else if i > 1000 {
			e.tb.Fatalf("no successor answers: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stopMounter ends the current mounter with SIGTERM.
func (e *crashEnv) stopMounter() {
	e.spawner.do("term")
	e.running = false
}

func (e *crashEnv) mount(name string) string {
	target := filepath.Join(e.dir, "mnt", name)
	if err := os.MkdirAll(target, 0o750); err != nil {
		e.tb.Fatal(err)
	}
	req := &mounter.Request{Target: target, Kind: mounter.Builtin, FS: bucketfs.Config{
		Endpoint: e.s3.Endpoint, AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey,
		Bucket: bucket, Prefix: name, CapacityBytes: 1 << 30,
	}}
	if err := e.client.Mount(context.Background(), req); err != nil {
		e.tb.Fatal(err)
	}
	return target
}

// kills is how many times TestCrashUnderLoad kills the mounter:
// VOLPLUG_CRASH_KILLS (make reliability: 20), else 3.
func kills(tb testing.TB) int {
	if v := os.Getenv("VOLPLUG_CRASH_KILLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			tb.Fatalf("VOLPLUG_CRASH_KILLS=%q", v)
		}
		return n
	}
	return 3
}

// The mounter is killed with SIGKILL (and, every other time, upgraded
// first through a graceful handover) while a reader (a handle held open
// across the kills, and readdir) and a writer (create, write, fsync,
// close, over and over) loop on a built-in mount; a new mounter is
// started each time and takes the mount back from the keeper. Every
// syscall succeeds, except that a write, fsync or close in flight may
// fail with EIO once per kill; none fails with ENOTCONN; every file whose
// fsync succeeded is in the bucket, byte for byte.
func TestCrashUnderLoad(t *testing.T) {
	e := newCrashEnv(t, time.Minute)
	ctx := context.Background()
	e.startMounter()
	target := e.mount("vol")
	defer func() {
		if !e.running {
			e.startMounter()
		}
		if err := e.client.Unmount(ctx, target); err != nil {
			t.Errorf("unmount: %v", err)
		}
		e.stopMounter()
		testutil.CheckClean(t, e.dir)
	}()
	l := startLoad(t, target, true)
	defer l.close()
	n := kills(t)
	for k := 1; k <= n; k++ {
		time.Sleep(200 * time.Millisecond)
		if k%2 == 0 {
			// A graceful upgrade between two crashes: the successor
			// journals where its predecessor did, and is killed next.
			e.upgrade()
			time.Sleep(100 * time.Millisecond)
		}
		if k == 2 {
			// The keeper's own restart: the mounter hands it the mount again.
			e.restartKeeper(target)
		}
		e.kill()
		time.Sleep(50 * time.Millisecond) // requests queue in the kernel meanwhile
		e.startMounter()
		list, err := e.client.List(ctx)
		if err != nil || len(list) != 1 || !list[0].Alive {
			t.Fatalf("kill %d: the new mounter lists %+v %v", k, list, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	files, eios := l.finish(t, filepath.Join(e.s3.Dir, bucket, "vol"))
	if eios > n {
		t.Errorf("%d EIOs over %d kills: want at most one per kill", eios, n)
	}
	t.Logf("%d files written and fsync'd across %d kills, %d EIOs", files, n, eios)
}

// Where crash failover cannot work, the mount dies as it did without a
// keeper, and is cleaned up the same way.
func TestCrashFallbacks(t *testing.T) {
	e := newCrashEnv(t, time.Second)
	ctx := context.Background()
	t.Run("s3fs", func(t *testing.T) {
		// s3fs and rclone mounts cannot fail over: their FUSE server is their own
		// process, not the mounter. On a host it outlives a killed mounter (and
		// the next one adopts it); in a pod it dies with the mounter's container,
		// which this plays by killing both. The mount then answers ENOTCONN (the
		// node plugin reports it INACCESSIBLE), the keeper has nothing of it, and
		// the next mount request replaces it.
		e.startMounter()
		target := filepath.Join(e.dir, "mnt", "s3fs")
		if err := os.MkdirAll(target, 0o750); err != nil {
			t.Fatal(err)
		}
		req := &mounter.Request{Target: target, Kind: mounter.S3FS, FS: bucketfs.Config{
			Endpoint: e.s3.Endpoint, AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey,
			Bucket: bucket, Prefix: "s3fs", CapacityBytes: 1 << 30,
		}}
		if err := e.client.Mount(ctx, req); err != nil {
			t.Fatal(err)
		}
		progs := pidsMentioning(t, target)
		e.kill()
		for _, pid := range progs {
			n, _ := strconv.Atoi(pid)
			_ = syscall.Kill(n, syscall.SIGKILL)
		}
		deadline := time.Now().Add(5 * time.Second)
		for _, err := os.Stat(target); !errors.Is(err, syscall.ENOTCONN); _, err = os.Stat(target) {
			if time.Now().After(deadline) {
				t.Fatalf("an s3fs mount after its mounter's container died: %v, want ENOTCONN", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		e.startMounter()
		if _, err := os.Stat(target); !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("after a new mounter started: %v, want ENOTCONN still (nothing to recover)", err)
		}
		if err := e.client.Mount(ctx, req); err != nil {
			t.Fatalf("a new mount over the dead one: %v", err)
		}
		if _, err := os.Stat(target); err != nil {
			t.Errorf("after the new mount: %v", err)
		}
		if err := e.client.Unmount(ctx, target); err != nil {
			t.Error(err)
		}
		e.stopMounter()
		testutil.CheckClean(t, e.dir)
	})
	t.Run("sigterm-abandoned", func(t *testing.T) {
		// A mounter stopped (SIGTERM) with no successor leaves its
		// built-in mounts to the keeper (TestTerminateLeavesMountsToKeeper);
		// when no mounter comes within the grace period, the keeper aborts
		// them as after a crash, and the next mounter removes what was
		// saved for a successor (the requests hold keys).
		e.startMounter()
		target := e.mount("stopped")
		e.stopMounter()
		start := time.Now()
		_, err := os.Stat(filepath.Join(target, "not-cached"))
		if !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("stat waiting at the end of the grace period: %v, want ECONNABORTED", err)
		}
		if took := time.Since(start); took < 500*time.Millisecond {
			t.Errorf("the mount died at once (%v): it was not left to the keeper", took)
		}
		e.startMounter()
		if left, _ := filepath.Glob(filepath.Join(e.state, mounter.Builtin, "*", "request.json")); len(left) != 0 {
			t.Errorf("saved requests left: %v", left)
		}
		if err := e.client.Unmount(ctx, target); err != nil {
			t.Errorf("unmount of the dead mount: %v", err)
		}
		e.stopMounter()
		testutil.CheckClean(t, e.dir)
	})
	t.Run("abandoned", func(t *testing.T) {
		// When no mounter comes back within the keeper's grace period, the
		// keeper aborts the mount: a process waiting on it gets ENOTCONN instead
		// of hanging, and the mount is a dead one that unmounts as any other.
		e.startMounter()
		target := e.mount("abandoned")
		if err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		e.kill()
		start := time.Now()
		// Waits in the kernel's queue, and fails when the keeper aborts.
		_, err := os.Stat(filepath.Join(target, "not-cached"))
		if !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("stat waiting at the end of the grace period: %v, want ECONNABORTED", err)
		}
		if took := time.Since(start); took < 500*time.Millisecond {
			t.Errorf("the mount died at once (%v): the keeper did not hold it", took)
		}
		if _, err := os.Stat(target); !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("stat after the grace period: %v, want ENOTCONN (a dead mount)", err)
		}
		// The node plugin unstages through a mounter, which takes the dead
		// mount down.
		e.startMounter()
		if err := e.client.Unmount(ctx, target); err != nil {
			t.Errorf("unmount of the dead mount: %v", err)
		}
		e.stopMounter()
		testutil.CheckClean(t, e.dir)
	})
}
