// Package adapt is `volplug adapt`: it serves any FlexVolume driver
// executable as a CSI driver, playing kubelet and controller-manager
// towards it. It is a front door beside internal/csi: it validates,
// locks and maps errors with csirpc exactly as `volplug csi` does, and
// runs the driver with pkg/flex exactly as kubelet would, adding what
// kubelet lacks: a deadline on every call, after which the driver's whole
// process group is killed.
//
// It keeps no state: every answer is derived from the request, the
// kernel's mount table and the driver, so a restart at any point loses
// nothing (unmount and unmountdevice need only a path).
package adapt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/csirpc"
	"github.com/volplug/volplug/pkg/flex"
)

// Attach modes of --enable-attach.
const (
	AttachAuto  = "auto" // as the driver's init says
	AttachTrue  = "true"
	AttachFalse = "false"
)

// Options configure an Adapter.
type Options struct {
	DriverPath string // the FlexVolume executable, run directly (never by a shell)
	Name       string // the CSI driver name
	NodeID     string
	Version    string
	// CallTimeout bounds every driver call, beside the RPC's own deadline.
	CallTimeout time.Duration
	// Attach is auto, true or false.
	Attach string
}

// features is what the driver's answers at start allow the adapter to
// advertise.
type features struct {
	caps        flex.Capabilities
	attach      bool // attach/detach, waitforattach/mountdevice: CSI stage and ControllerPublish
	provision   bool // volplug's provision/delete extension
	expandCtrl  bool // the driver answers expandvolume
	expandNode  bool // expandfs, or kubelet's generic resize after mountdevice
	mountGroup  bool // the driver applies fsGroup itself (init: fsGroup false)
	nodeMetrics bool // init: supportsMetrics; kubelet would statfs the volume
}

// Adapter serves one FlexVolume driver as CSI.
type Adapter struct {
	opts  Options
	feat  features
	locks *csirpc.Locks
}

// New checks the options, runs the driver's init and learns what to
// advertise from its answers.
func New(ctx context.Context, opts Options) (*Adapter, error) {
	if !csirpc.DriverName.MatchString(opts.Name) {
		return nil, fmt.Errorf("driver name %q: must match %s", opts.Name, csirpc.DriverName)
	}
	if opts.NodeID == "" {
		return nil, errors.New("a node ID is required")
	}
	if opts.CallTimeout <= 0 {
		return nil, fmt.Errorf("call timeout %v: must be positive", opts.CallTimeout)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	fi, err := os.Stat(opts.DriverPath)
	if err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("driver %s is not an executable file", opts.DriverPath)
	}
	a := &Adapter{opts: opts, locks: csirpc.NewLocks()}
	res, err := a.call(ctx, flex.CallInit)
	if err != nil {
		return nil, fmt.Errorf("driver init: %w", err)
	}
	a.feat.caps = flex.DefaultCapabilities()
	if res.Capabilities != nil {
		a.feat.caps = *res.Capabilities
	}
	switch opts.Attach {
	case AttachAuto, "":
		a.feat.attach = a.feat.caps.Attach
	case AttachTrue:
		a.feat.attach = true
	case AttachFalse:
		a.feat.attach = false
	default:
		return nil, fmt.Errorf("enable-attach %q: use auto, true or false", opts.Attach)
	}
	a.feat.provision = a.feat.caps.Provision
	a.feat.mountGroup = !a.feat.caps.FSGroup
	a.feat.nodeMetrics = a.feat.caps.SupportsMetrics
	// Expansion is advertised only when the driver answers the calls. They
	// are asked with options that name no volume: a driver that has them
	// fails (or succeeds) on that, one that has not says "Not supported".
	a.feat.expandCtrl = a.answers(ctx, flex.CallExpandVolume, "{}", "", "0", "0")
	expandFS := a.answers(ctx, flex.CallExpandFS, "{}", "", "", "0", "0")
	// kubelet grows the filesystem itself when expandfs is not supported,
	// which needs the device mountdevice (or its default) mounted.
	a.feat.expandNode = a.feat.caps.RequiresFSResize && (expandFS || a.feat.attach)
	klog.InfoS("driver initialised", "driver", opts.DriverPath, "capabilities", a.feat.caps,
		"attach", a.feat.attach, "provision", a.feat.provision,
		"controllerExpand", a.feat.expandCtrl, "nodeExpand", a.feat.expandNode)
	return a, nil
}

// answers reports whether the driver implements call: anything but "Not
// supported" (or output kubelet could not read, or a timeout) counts.
func (a *Adapter) answers(ctx context.Context, call string, args ...string) bool {
	res, err := a.call(ctx, call, args...)
	if errors.Is(err, flex.ErrNotSupported) {
		return false
	}
	return res != nil
}

// call runs one driver call under the RPC's deadline and --call-timeout.
// Arguments are never logged: the JSON one may hold secrets.
func (a *Adapter) call(ctx context.Context, call string, args ...string) (*flex.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CallTimeout)
	defer cancel()
	start := time.Now()
	res, err := flex.Call(ctx, a.opts.DriverPath, call, args...)
	if err != nil {
		klog.V(2).InfoS("driver call failed", "call", call, "error", err, "duration", time.Since(start))
	} else {
		klog.V(3).InfoS("driver call", "call", call, "duration", time.Since(start))
	}
	return res, err
}

// toStatus maps a failed driver call to a gRPC status: its deadline is
// DEADLINE_EXCEEDED, a Failure carrying volplug's code extension gets that
// code, and every other failure (a Failure, output kubelet could not
// parse, Success with a failing exit) is INTERNAL, quoting the driver.
func toStatus(res *flex.Result, err error) error {
	if _, ok := status.FromError(err); ok {
		return err // the adapter's own answer (a default kubelet would apply failed)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Errorf(codes.DeadlineExceeded, "%v: the driver's process group was killed", err)
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	if errors.Is(err, flex.ErrFailure) && res != nil && res.Code != "" {
		if c, ok := csirpc.ParseCode(res.Code); ok && c != codes.OK {
			return status.Error(c, err.Error())
		}
	}
	return status.Error(codes.Internal, err.Error())
}

// Serve serves the adapter on l until ctx is cancelled, then stops
// gracefully: calls in flight finish (up to 30 s).
func (a *Adapter) Serve(ctx context.Context, l net.Listener) error {
	srv := grpc.NewServer(grpc.UnaryInterceptor(csirpc.LogCalls))
	csi.RegisterIdentityServer(srv, &identityServer{a: a})
	csi.RegisterControllerServer(srv, &controllerServer{a: a})
	csi.RegisterNodeServer(srv, &nodeServer{a: a})
	klog.InfoS("serving CSI for a FlexVolume driver", "name", a.opts.Name, "driver", a.opts.DriverPath,
		"node", a.opts.NodeID, "endpoint", l.Addr().String())
	return csirpc.Serve(ctx, srv, l)
}
