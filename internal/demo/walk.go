package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Volume states of the CSI spec's lifecycle diagram (with stage and attach).
const (
	stateNone      = "(none)"
	stateCreated   = "CREATED"
	stateNodeReady = "NODE_READY"
	stateVolReady  = "VOL_READY"
	statePublished = "PUBLISHED"
	volumeName     = "demo-vol"
	rpcTimeout     = 2 * time.Minute
	stopGrace      = 40 * time.Second // the driver drains calls for up to 30 s
)

type options struct {
	keep   bool
	attach bool
	fsType string
	size   int64
	// more adds snapshot, restore and expansion to the walk.
	more bool
}

// undoStep is the way back from one forward step.
type undoStep struct {
	title, meaning string
	fn             func(ctx context.Context) error
}

// demo holds one run: paths, the driver, and what was set up so far.
type demo struct {
	opts options
	n    *narrator

	dir, sock, pool, staging, target, logPath string

	drv    *driverProc
	conn   *grpc.ClientConn
	ctrl   csi.ControllerClient
	node   csi.NodeClient
	nodeID string

	ctrlCaps, nodeCaps map[string]bool
	capability         *csi.VolumeCapability
	volID              string
	volCtx, pubCtx     map[string]string
	state              string

	undo []undoStep
}

func run(ctx context.Context, w io.Writer, o options) error {
	if err := preflight(o.fsType); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "volplug-demo-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	// mountinfo and loop backing files show resolved paths; compare like
	// with like if TMPDIR goes through a symlink.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	d := &demo{
		opts:    o,
		n:       &narrator{w: w},
		dir:     dir,
		sock:    filepath.Join(dir, "csi.sock"),
		pool:    filepath.Join(dir, "pool"),
		staging: filepath.Join(dir, "staging"),
		target:  filepath.Join(dir, "pods", "demo", "volume"),
		logPath: filepath.Join(dir, "driver.log"),
		state:   stateNone,
		capability: &csi.VolumeCapability{
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: o.fsType}},
		},
	}
	start := time.Now()
	d.n.printf("volplug demo: one volume's whole life through CSI, on this machine\n")
	d.n.printf("%swork dir %s (driver log: driver.log there)\n", indent, dir)

	fwdErr := d.forward(ctx)
	if fwdErr != nil {
		d.n.printf("\n!! the walk failed: %v\n!! tearing down what was set up, in reverse\n", fwdErr)
	} else {
		d.n.printf("\n-- and back, the way Kubernetes tears a volume down --\n")
	}
	// The way back must run even after Ctrl-C cancelled ctx: a half-torn
	// demo leaves mounts on the host.
	backErr := d.unwind(context.WithoutCancel(ctx), fwdErr != nil)
	failed := fwdErr != nil || backErr != nil
	cleanErr := d.cleanup(failed)

	if failed && d.drv != nil {
		d.n.printf("\ndriver log: %s; its last lines:\n", d.logPath)
		for _, l := range d.drv.tail(15) {
			d.n.printf("%s%s\n", indent, l)
		}
	}
	if err := errors.Join(fwdErr, backErr, cleanErr); err != nil {
		return err
	}
	d.n.printf("\nThe volume went %s -> %s -> %s -> %s and back, in %s in all.\n",
		stateCreated, stateNodeReady, stateVolReady, statePublished, roundDur(time.Since(start)))
	return nil
}

// do runs one forward step and narrates it.
func (d *demo) do(ctx context.Context, title, meaning string, fn func(ctx context.Context) error) error {
	d.n.begin("", title, meaning)
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	t0 := time.Now()
	err := fn(ctx)
	d.n.end(time.Since(t0), err)
	return err
}

func (d *demo) push(title, meaning string, fn func(ctx context.Context) error) {
	d.undo = append(d.undo, undoStep{title: title, meaning: meaning, fn: fn})
}

func (d *demo) transition(to string) {
	if d.state == to {
		return // an undo whose forward call had failed: nothing changed
	}
	d.n.detail("state: %s -> %s", d.state, to)
	d.state = to
}

// unwind runs the undo steps in reverse. After a failure every step is
// tried (best effort) and all errors are returned together.
func (d *demo) unwind(ctx context.Context, afterFailure bool) error {
	var errs []error
	for i := len(d.undo) - 1; i >= 0; i-- {
		u := d.undo[i]
		label := ""
		if afterFailure {
			label = "cleanup:"
		}
		d.n.begin(label, u.title, u.meaning)
		sctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		t0 := time.Now()
		err := retryAborted(sctx, u.fn)
		cancel()
		d.n.end(time.Since(t0), err)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.title, err))
		}
	}
	d.undo = nil
	return errors.Join(errs...)
}

// retryAborted retries fn while the driver answers ABORTED, which it does
// while an earlier call on the same volume is still running (say, a
// NodeStage whose client gave up on Ctrl-C). The sidecars retry the same way.
func retryAborted(ctx context.Context, fn func(context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		err := fn(ctx)
		if status.Code(err) != codes.Aborted {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func (d *demo) forward(ctx context.Context) error {
	steps := []func(context.Context) error{
		d.startDriver, d.identity, d.capabilities, d.createVolume, d.controllerPublish,
		d.nodeStage, d.nodePublish, d.useVolume, d.showSpace, d.showMounts,
		d.snapshotAndRestore, d.expand,
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		if err := s(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) driverArgs() []string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "demo-node"
	}
	return []string{
		"--backend=local",
		"--endpoint=unix://" + d.sock,
		"--node-id=" + host,
		"--pool=" + d.pool,
		fmt.Sprintf("--enable-attach=%t", d.opts.attach),
	}
}
