// Package hostile sends hostile input to every front door of volplug, as
// real processes over real unix sockets on real loop devices, mounts and a
// real S3 server, and checks two things for each case: the answer (the
// gRPC code the CSI spec asks for, a FlexVolume Failure) and that nothing
// on the host changed (mount table, loop devices, the pool's tree, the
// buckets). It needs root.
package hostile

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"

	"github.com/volplug/volplug/internal/ctl"
	"github.com/volplug/volplug/internal/testutil"
)

const node = "hostile-node"

// proc is one long-running volplug process serving CSI on a unix socket.
type proc struct {
	t    *testing.T
	name string
	sock string
	log  string
	cmd  *exec.Cmd
	conn *grpc.ClientConn
}

// startProc runs `volplug <args>` with its output in dir/<name>.log and
// waits until it answers Probe on dir/<name>.sock.
func startProc(t *testing.T, bin, dir, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, sock: filepath.Join(dir, name+".sock"), log: filepath.Join(dir, name+".log")}
	args = append(args, "--endpoint", "unix://"+p.sock)
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		conn, err := ctl.Dial(ctx, "unix://"+p.sock)
		if err == nil {
			if _, err = csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{}); err == nil {
				p.conn = conn
				return p
			}
			conn.Close()
		}
		if ctx.Err() != nil {
			t.Fatalf("%s did not come up: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	if p.conn != nil {
		p.conn.Close()
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
	p.cmd = nil
}

func (p *proc) ctrl() csi.ControllerClient       { return csi.NewControllerClient(p.conn) }
func (p *proc) nodeC() csi.NodeClient            { return csi.NewNodeClient(p.conn) }
func (p *proc) ident() csi.IdentityClient        { return csi.NewIdentityClient(p.conn) }
func (p *proc) group() csi.GroupControllerClient { return csi.NewGroupControllerClient(p.conn) }

// installFlex installs the binary as kubelet finds a FlexVolume driver,
// <pluginDir>/volplug~<driver>/<driver>, with its volplug.json naming the
// pool, the node and the log file, and returns the executable.
func installFlex(t *testing.T, bin, pluginDir, driver, pool, logFile string, attach bool) string {
	t.Helper()
	drvDir := filepath.Join(pluginDir, "volplug~"+driver)
	if err := os.MkdirAll(drvDir, 0o700); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(drvDir, driver)
	if err := os.Link(bin, exe); err != nil {
		t.Fatal(err)
	}
	conf, err := json.Marshal(map[string]any{"pool": pool, "node": node, "attach": attach, "logFile": logFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(drvDir, "volplug.json"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	return exe
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func rootTest(t *testing.T) string {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	return dir
}
