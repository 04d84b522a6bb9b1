package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// DriverOptions says how to start the driver under test.
type DriverOptions struct {
	Binary       string        // volplug binary to run as `<binary> csi ...`
	Dir          string        // private work dir: socket, pool and volume dirs
	Pool         string        // --pool; "" = <Dir>/pool (the snapshot section puts it on its own filesystem)
	NodeID       string        // --node-id, checked against NodeGetInfo
	Attach       bool          // pass --enable-attach
	LogPath      string        // driver stdout+stderr go here
	StartTimeout time.Duration // until the socket answers Probe
	RPCTimeout   time.Duration // per RPC
	SizeBytes    int64
	FsType       string
	Parameters   map[string]string // StorageClass parameters of every volume
	StageDelay   time.Duration     // untimed wait between CreateVolume and the next step
}

// DriverInfo is what the driver told us about itself.
type DriverInfo struct {
	Name              string `json:"name"`
	Version           string `json:"version"`
	NodeID            string `json:"node_id"`
	PID               int    `json:"pid"`
	Binary            string `json:"binary"`
	AttachRequested   bool   `json:"attach_requested"`
	ControllerPublish bool   `json:"controller_publish"`
	StageUnstage      bool   `json:"stage_unstage"`
	Snapshots         bool   `json:"create_delete_snapshot"`
	Clones            bool   `json:"clone_volume"`
}

// Driver is a running `volplug csi` child process and a gRPC client to it.
type Driver struct {
	Info DriverInfo
	// ExitStatus is how the driver ended after SIGTERM ("exit status 0"
	// or "signal: terminated"), for the report; set by Stop.
	ExitStatus string

	opts   DriverOptions
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
	waitMu sync.Mutex
	waitEr error

	conn  *grpc.ClientConn
	ident csi.IdentityClient
	ctrl  csi.ControllerClient
	node  csi.NodeClient

	volDir string
	cap    *csi.VolumeCapability
	steps  []string

	warnMu   sync.Mutex
	warnings map[string]int
}

// StartDriver starts the driver, waits until it answers, and reads its
// capabilities. On error nothing is left running.
func StartDriver(ctx context.Context, o DriverOptions) (d *Driver, err error) {
	sock := filepath.Join(o.Dir, "csi.sock")
	pool := o.Pool
	if pool == "" {
		pool = filepath.Join(o.Dir, "pool")
	}
	volDir := filepath.Join(o.Dir, "vols")
	for _, p := range []string{pool, volDir} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", p, err)
		}
	}
	args := []string{"csi",
		"--backend=local",
		"--endpoint=unix://" + sock,
		"--node-id=" + o.NodeID,
		"--pool=" + pool,
	}
	if o.Attach {
		args = append(args, "--enable-attach")
	}
	logf, err := os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open driver log: %w", err)
	}
	// Not CommandContext: a cancelled bench must still be able to tear its
	// volumes down through the driver before stopping it with SIGTERM.
	cmd := exec.Command(o.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a ^C at the terminal must reach only the
		// bench, which then unwinds volumes in order; the driver is
		// needed for that.
		Setpgid: true,
		// If the bench dies outright, the driver must not linger.
		// (Linux ties this to the forking thread, which the Go
		// runtime keeps alive unless a locked goroutine exits; none
		// here does.)
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", o.Binary, err)
	}
	logf.Close() // the child holds its own copy
	d = &Driver{
		opts:     o,
		cmd:      cmd,
		exited:   make(chan struct{}),
		volDir:   volDir,
		warnings: map[string]int{},
		cap: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: o.FsType}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
	}
	d.Info.PID = cmd.Process.Pid
	d.Info.Binary = o.Binary
	d.Info.AttachRequested = o.Attach
	go func() {
		err := cmd.Wait()
		d.waitMu.Lock()
		d.waitEr = err
		d.waitMu.Unlock()
		close(d.exited)
	}()
	defer func() {
		if err != nil {
			// An early exit is already in err; only other stop
			// failures are news.
			err = errors.Join(err, d.stop(false))
		}
	}()
	if err := d.connect(ctx, sock); err != nil {
		return d, err
	}
	if err := d.discover(ctx); err != nil {
		return d, err
	}
	return d, nil
}

// dialUnix opens a gRPC client on a unix socket path. grpc.NewClient is
// lazy, so readiness is checked separately with Probe.
func dialUnix(sock string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", sock, err)
	}
	return conn, nil
}

func (d *Driver) connect(ctx context.Context, sock string) error {
	deadline := time.Now().Add(d.opts.StartTimeout)
	var lastErr error
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("driver exited before serving %s: %v%s", sock, d.exitErr(), d.logTail())
		case <-ctx.Done():
			return fmt.Errorf("waiting for driver socket: %w", ctx.Err())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("driver did not answer on %s within %s (last error: %v)%s",
				sock, d.opts.StartTimeout, lastErr, d.logTail())
		}
		if _, err := os.Stat(sock); err != nil {
			lastErr = err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if d.conn == nil {
			conn, err := dialUnix(sock)
			if err != nil {
				return err
			}
			d.conn = conn
			d.ident = csi.NewIdentityClient(conn)
			d.ctrl = csi.NewControllerClient(conn)
			d.node = csi.NewNodeClient(conn)
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := d.ident.Probe(pctx, &csi.ProbeRequest{})
		cancel()
		// A missing Ready means ready, per the spec.
		if err == nil && (resp.GetReady() == nil || resp.GetReady().GetValue()) {
			return nil
		}
		if err == nil {
			err = errors.New("probe: not ready")
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *Driver) discover(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, d.opts.RPCTimeout)
	defer cancel()
	info, err := d.ident.GetPluginInfo(rctx, &csi.GetPluginInfoRequest{})
	if err != nil {
		return fmt.Errorf("GetPluginInfo: %w", err)
	}
	d.Info.Name, d.Info.Version = info.GetName(), info.GetVendorVersion()

	cc, err := d.ctrl.ControllerGetCapabilities(rctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("ControllerGetCapabilities: %w", err)
	}
	canCreate := false
	for _, c := range cc.GetCapabilities() {
		switch c.GetRpc().GetType() {
		case csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME:
			canCreate = true
		case csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME:
			d.Info.ControllerPublish = true
		case csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT:
			d.Info.Snapshots = true
		case csi.ControllerServiceCapability_RPC_CLONE_VOLUME:
			d.Info.Clones = true
		}
	}
	if !canCreate {
		return errors.New("driver does not advertise CREATE_DELETE_VOLUME: nothing to benchmark")
	}
	nc, err := d.node.NodeGetCapabilities(rctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("NodeGetCapabilities: %w", err)
	}
	for _, c := range nc.GetCapabilities() {
		if c.GetRpc().GetType() == csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME {
			d.Info.StageUnstage = true
		}
	}
	ni, err := d.node.NodeGetInfo(rctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return fmt.Errorf("NodeGetInfo: %w", err)
	}
	d.Info.NodeID = ni.GetNodeId()
	if d.Info.NodeID != d.opts.NodeID {
		return fmt.Errorf("NodeGetInfo: node id %q, started with --node-id=%q", d.Info.NodeID, d.opts.NodeID)
	}

	// The cycle follows what the driver advertises, as a CO would.
	d.steps = []string{stepCreate}
	if d.Info.ControllerPublish {
		d.steps = append(d.steps, stepCtrlPublish)
	}
	if d.Info.StageUnstage {
		d.steps = append(d.steps, stepStage)
	}
	d.steps = append(d.steps, stepPublish, stepUnpublish)
	if d.Info.StageUnstage {
		d.steps = append(d.steps, stepUnstage)
	}
	if d.Info.ControllerPublish {
		d.steps = append(d.steps, stepCtrlUnpublish)
	}
	d.steps = append(d.steps, stepDelete)
	return nil
}

func (d *Driver) warn(msg string) {
	d.warnMu.Lock()
	defer d.warnMu.Unlock()
	d.warnings[msg]++
}

// Warnings returns driver misbehaviour seen that did not fail a cycle,
// with how often each happened.
func (d *Driver) Warnings() []string {
	d.warnMu.Lock()
	defer d.warnMu.Unlock()
	var out []string
	for msg, n := range d.warnings {
		out = append(out, fmt.Sprintf("%s (%d times)", msg, n))
	}
	return out
}

// HWMKiB returns the driver's VmHWM (peak RSS over its life).
func (d *Driver) HWMKiB() (int64, error) { return procStatusKB(d.Info.PID, "VmHWM") }

// RSSKiB returns the driver's current VmRSS.
func (d *Driver) RSSKiB() (int64, error) { return procStatusKB(d.Info.PID, "VmRSS") }

func (d *Driver) exitErr() error {
	d.waitMu.Lock()
	defer d.waitMu.Unlock()
	if d.waitEr == nil {
		return errors.New("exit status 0")
	}
	return d.waitEr
}

// Stop closes the client and ends the driver with SIGTERM, then SIGKILL
// after a grace period. A driver that needs SIGKILL is reported as an
// error: it would not survive a rolling update cleanly either.
func (d *Driver) Stop() error { return d.stop(true) }

func (d *Driver) stop(reportEarlyExit bool) error {
	var errs []error
	if d.conn != nil {
		if err := d.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close grpc: %w", err))
		}
		d.conn = nil
	}
	select {
	case <-d.exited:
		if reportEarlyExit {
			errs = append(errs, fmt.Errorf("driver had already exited: %v%s", d.exitErr(), d.logTail()))
		}
		return errors.Join(errs...)
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		errs = append(errs, fmt.Errorf("SIGTERM driver: %w", err))
	}
	select {
	case <-d.exited:
		d.ExitStatus = d.exitErr().Error()
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
		errs = append(errs, fmt.Errorf("driver ignored SIGTERM for 10s, killed%s", d.logTail()))
	}
	return errors.Join(errs...)
}

// logTail returns the last lines of the driver log, for error messages.
func (d *Driver) logTail() string {
	f, err := os.Open(d.opts.LogPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 20 {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return "\n--- driver log (last lines) ---\n" + strings.Join(lines, "\n")
}
