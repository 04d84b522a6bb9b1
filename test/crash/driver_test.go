package crash

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"

	"github.com/volplug/volplug/internal/ctl"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/testutil"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

// volplugWithFailpoints builds the binary once per test run, with the
// failpoints compiled in.
func volplugWithFailpoints(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "volplug-crash-bin-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "volplug")
		cmd := exec.Command("go", "build", "-tags", "failpoints", "-o", builtBin, "./cmd/volplug")
		cmd.Dir = testutil.ModuleRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			t.Logf("go build -tags failpoints: %s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build volplug with failpoints: %v", buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// driver is one `volplug csi` process; it may be killed (by a failpoint
// or by the test) and started again on the same socket and pool.
type driver struct {
	t      testing.TB
	bin    string
	dir    string
	args   []string
	fpLog  string // where fired failpoints are written
	cmd    *exec.Cmd
	exited chan struct{}
	conn   *grpc.ClientConn
	ctrl   csi.ControllerClient
	node   csi.NodeClient
	group  csi.GroupControllerClient
	seen   int // lines of fpLog already reported
}

func newDriver(t testing.TB, dir string, args ...string) *driver {
	return &driver{t: t, bin: volplugWithFailpoints(t), dir: dir, args: args, fpLog: filepath.Join(dir, "failpoints.log")}
}

func (d *driver) sock() string { return "unix://" + filepath.Join(d.dir, "csi.sock") }

// start runs the driver with arm as its armed failpoints ("" for none) and
// waits until it answers.
func (d *driver) start(arm string) {
	d.t.Helper()
	log, err := os.OpenFile(filepath.Join(d.dir, "driver.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	defer log.Close()
	args := append([]string{"csi", "--endpoint", d.sock(), "--node-id", "crash-node", "--v", "2"}, d.args...)
	d.cmd = exec.Command(d.bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	d.cmd.Env = append(cleanEnv(), failpoint.Env+"="+arm, failpoint.LogEnv+"="+d.fpLog)
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	exited := make(chan struct{})
	d.exited = exited
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(exited) }(d.cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		conn, err := ctl.Dial(ctx, d.sock())
		if err == nil {
			if _, err = csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{}); err == nil {
				d.conn = conn
				d.ctrl, d.node, d.group = csi.NewControllerClient(conn), csi.NewNodeClient(conn), csi.NewGroupControllerClient(conn)
				return
			}
			conn.Close()
		}
		select {
		case <-exited:
			d.t.Fatalf("driver exited at start; see %s", filepath.Join(d.dir, "driver.log"))
		default:
		}
		if ctx.Err() != nil {
			d.t.Fatalf("driver did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanEnv is the test's environment without failpoints of its own.
func cleanEnv() []string {
	var out []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, failpoint.Env+"=") && !strings.HasPrefix(e, failpoint.LogEnv+"=") {
			out = append(out, e)
		}
	}
	return out
}

// stop ends the driver with sig (SIGTERM: a graceful stop, which waits for
// background work) and waits for it.
func (d *driver) stop(sig syscall.Signal) {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	<-d.exited
	d.cmd = nil
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
}

func (d *driver) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return d.cmd != nil
	}
}

// newFirings returns the failpoints that fired since the last call.
func (d *driver) newFirings() []string {
	data, _ := os.ReadFile(d.fpLog)
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) <= d.seen {
		return nil
	}
	out := lines[d.seen:]
	d.seen = len(lines)
	return out
}

// restart brings the driver back unarmed: after a kill (the point fired in
// it) or, when the point fired in another process (the mounter), after a
// graceful stop, so that nothing it starts is armed again.
func (d *driver) restart() {
	d.t.Helper()
	d.stop(syscall.SIGTERM) // a dead process is only reaped
	d.start("")
}

// processesNaming lists the processes with s in their argv.
func processesNaming(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(cmdline, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}
