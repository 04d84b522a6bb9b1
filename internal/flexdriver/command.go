// Package flexdriver is `volplug flex`: a FlexVolume driver that maps the
// calls kubelet and controller-manager make onto a volplug backend. It is
// also what runs when the binary is installed as
// <plugindir>/volplug~local/local and kubelet runs it under that name.
//
// Every call prints exactly one JSON object and nothing else: kubelet reads
// stdout and stderr together as the answer. Logs go to a file or syslog.
package flexdriver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/csirpc"
	"github.com/volplug/volplug/pkg/flex"
)

// drivers are the backends a flex driver can be installed for, by the name
// kubelet runs it under (<plugindir>/volplug~<name>/<name>).
var drivers = map[string]bool{"local": true, "s3": true}

// Invoked reports whether the process was started under a driver's name,
// i.e. by kubelet as <plugindir>/volplug~local/local. main must then hand
// over to Main at once: the call is the first argument, not a subcommand.
func Invoked() (driver string, ok bool) {
	name := filepath.Base(os.Args[0])
	return name, drivers[name]
}

// NewCommand returns `volplug flex <call> <args...>` and
// `volplug flex install`.
func NewCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flex <call> <args...>",
		Short: "FlexVolume driver for the local backend",
		Long: `A FlexVolume driver: kubelet and controller-manager run it as
<plugindir>/volplug~local/local <call> <args...>, and it answers one JSON
object. "volplug flex <call> <args...>" is the same driver.

Configuration: $` + ConfigEnv + `, else volplug.json beside the executable:
  {"pool": "/var/lib/volplug/flex/local", "node": "<hostname>",
   "attach": false, "logFile": "/var/log/volplug/flex-local.log"}
Volume options: volumeID (an existing volume), or image (a volume name;
default: <pod namespace>/<PV or pod volume name>), size (e.g. 1Gi),
fsType (ext4, xfs, btrfs).`,
		// Arguments are the protocol's, not flags; and cobra must print
		// nothing, since the whole output is the JSON answer.
		DisableFlagParsing: true,
		SilenceUsage:       true,
		SilenceErrors:      true,
		Run: func(cmd *cobra.Command, args []string) {
			os.Exit(Main("local", args))
		},
	}
	cmd.AddCommand(newInstallCommand())
	return cmd
}

// Main runs one call of driver name (args[0] with its arguments) and returns the exit
// code. Whatever happens, a panic included, the only output is one JSON
// object on the original stdout.
func Main(name string, args []string) int {
	out := os.Stdout
	log := slog.New(slog.DiscardHandler)
	res := func() (res *flex.Result) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				res = flex.Failure(fmt.Sprintf("internal error: %v", p))
			}
		}()
		cfg, cfgErr := loadConfig(name)
		var sink *os.File
		log, sink = openLog(cfg.LogFile)
		log = log.With("driver", name)
		out = isolateOutput(sink)
		if cfgErr != nil {
			log.Error("config", "err", cfgErr)
			return flex.Failure(cfgErr.Error())
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		d := &driver{name: name, cfg: cfg, log: log}
		return d.do(ctx, args)
	}()
	data, err := json.Marshal(res)
	if err != nil { // cannot happen with these types; still answer JSON
		data = []byte(`{"status":"Failure","message":"cannot encode the answer"}`)
		res = &flex.Result{Status: flex.StatusFailure}
	}
	data = append(data, '\n')
	if _, err := out.Write(data); err != nil {
		log.Error("write answer", "err", err)
	}
	if res.Status == flex.StatusFailure {
		return 1
	}
	return 0
}

// isolateOutput keeps the answer's channel to this process alone: fd 1 is
// duplicated close-on-exec (no child inherits it) to carry the answer, and
// fds 1 and 2 are pointed at sink. Whatever else writes there, a library's
// log, a child process, the Go runtime dying in another goroutine, lands in
// the log rather than in kubelet's parse; and a daemon a call starts cannot
// hold kubelet's pipe open, which would hang the call.
func isolateOutput(sink *os.File) *os.File {
	if sink == nil {
		return os.Stdout
	}
	fd, err := unix.FcntlInt(1, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return os.Stdout
	}
	for _, target := range []int{1, 2} {
		if err := unix.Dup3(int(sink.Fd()), target, 0); err != nil {
			return os.Stdout // unchanged fd 1 still carries the answer
		}
	}
	return os.NewFile(uintptr(fd), "answer")
}

// do checks the call and its arguments, logs them without secrets, and runs
// the call.
func (d *driver) do(ctx context.Context, args []string) (res *flex.Result) {
	if len(args) == 0 {
		return flex.Failure("no call given: usage: <driver> <call> <args...>")
	}
	call, args := args[0], args[1:]
	names, ok := flex.Args[call]
	if !ok {
		d.log.Info("call", "call", call, "args", len(args))
		return flex.NotSupported(fmt.Sprintf("unknown call %q", call))
	}
	if len(args) != len(names) {
		d.log.Info("call", "call", call, "args", len(args))
		return invalidArgument(fmt.Sprintf("%s takes %d arguments (%v), got %d", call, len(names), names, len(args)))
	}
	for i, n := range names {
		// kubelet's paths: absolute, clean, not a symlink (a mount or an
		// unmount there would land wherever it points). expandvolume's
		// deviceMountPath is "" from controller-manager.
		if (n == "podVolumeDir" || n == "deviceMountPath") && (args[i] != "" || call != flex.CallExpandVolume) {
			if _, err := csirpc.CheckNodePath(n, args[i]); err != nil {
				d.log.Info("call", "call", call, "err", err)
				return invalidArgument(status.Convert(err).Message())
			}
		}
	}
	attrs := []any{"call", call}
	var opts *flex.Options
	for i, n := range names {
		if n != "json" {
			attrs = append(attrs, n, args[i])
			continue
		}
		o, err := flex.ParseOptions([]byte(args[i]))
		if err != nil {
			// The raw text may hold secrets: it is not logged.
			d.log.Info("call", append(attrs, "err", err)...)
			return invalidArgument(err.Error())
		}
		opts = o
		attrs = append(attrs, "options", o)
	}
	d.log.Info("call", attrs...)
	if err := d.checkArgs(names, args, opts); err != nil {
		return failure(err)
	}
	defer func() {
		if res.Status == flex.StatusFailure {
			d.log.Error("answer", "call", call, "status", res.Status, "message", res.Message)
		} else {
			d.log.Info("answer", "call", call, "status", res.Status, "device", res.Device)
		}
	}()
	if d.name == "s3" {
		res, err := d.doS3(ctx, call, args, opts)
		if err != nil {
			return failure(err)
		}
		return res
	}

	if call == flex.CallInit {
		caps := d.capabilities()
		return &flex.Result{Status: flex.StatusSuccess, Capabilities: &caps}
	}
	if call == flex.CallGetVolumeName {
		// Current Kubernetes ignores the answer and uses the spec's name.
		return flex.NotSupported("kubelet uses the PV or volume name")
	}
	if err := d.open(); err != nil {
		return failure(err)
	}
	var err error
	res = flex.Success()
	switch call {
	case flex.CallAttach:
		res, err = d.attach(ctx, opts, args[1])
	case flex.CallDetach:
		err = d.detach(ctx, args[0], args[1])
	case flex.CallWaitForAttach:
		res.Device, err = d.waitForAttach(ctx, args[0], opts)
	case flex.CallIsAttached:
		var attached bool
		attached, err = d.isAttached(ctx, opts, args[1])
		res.Attached = flex.Bool(attached)
	case flex.CallMountDevice:
		err = d.mountDevice(ctx, args[0], args[1], opts)
	case flex.CallUnmountDevice:
		err = d.unmountDevice(ctx, args[0])
	case flex.CallMount:
		err = d.mount(ctx, args[0], opts)
	case flex.CallUnmount:
		err = d.unmount(ctx, args[0])
	case flex.CallExpandVolume:
		res, err = d.expandVolume(ctx, opts, args[2])
	case flex.CallExpandFS:
		res, err = d.expandFS(ctx, opts, args[2])
	case flex.CallProvision:
		res, err = d.provision(ctx, opts)
	case flex.CallDelete:
		err = d.delete(ctx, args[0], opts)
	}
	if err != nil {
		return failure(err)
	}
	return res
}

// invalidArgument is a Failure coded INVALID_ARGUMENT, for `volplug adapt`.
func invalidArgument(msg string) *flex.Result {
	res := flex.Failure(msg)
	res.Code = csirpc.CodeName(codes.InvalidArgument)
	return res
}

// checkArgs refuses what no kubelet sends: a node name with control
// characters, options this driver does not know (a typo would otherwise
// be a silent default), a filesystem type that is not a plain word.
func (d *driver) checkArgs(names, args []string, o *flex.Options) error {
	for i, n := range names {
		switch n {
		case "nodeName":
			if err := csirpc.CheckName("node", args[i]); err != nil {
				return fmt.Errorf("%s: %w", status.Convert(err).Message(), backend.ErrInvalid)
			}
		case "newBytes", "oldBytes":
			if v, err := strconv.ParseInt(args[i], 10, 64); err != nil || v < 0 {
				return fmt.Errorf("%s %q: want a number of bytes: %w", n, args[i], backend.ErrInvalid)
			}
		}
	}
	if o == nil || d.name != "local" {
		return nil // the s3 driver checks its parameters in the backend
	}
	for k := range o.Driver {
		switch k {
		case optVolumeID, optImage, optSize, optFsType:
		default:
			return fmt.Errorf("unknown option %q (known: %s, %s, %s, %s): %w", k, optVolumeID, optImage, optSize, optFsType, backend.ErrInvalid)
		}
	}
	for what, name := range map[string]string{flex.KeyPVOrVolumeName: o.VolumeName, optImage: o.Driver[optImage]} {
		if err := csirpc.CheckName("volume", name); name != "" && err != nil {
			return fmt.Errorf("option %q: %s: %w", what, status.Convert(err).Message(), backend.ErrInvalid)
		}
	}
	for _, fs := range []string{o.FsType, o.Driver[optFsType]} {
		if err := csirpc.CheckFsType(fs); err != nil {
			return fmt.Errorf("%s: %w", status.Convert(err).Message(), backend.ErrInvalid)
		}
	}
	return nil
}
