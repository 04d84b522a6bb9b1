package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/backend/local"
	"github.com/volplug/volplug/internal/backend/s3"
	"github.com/volplug/volplug/internal/csi"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newCSICommand() *cobra.Command {
	var (
		opts               csi.Options
		backendName        string
		endpoint           string
		pool               string
		mode               string
		s3opts             s3.Options
		formatOnCreate     bool
		deleteInBackground bool
		warmPool           string
	)
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "csi",
		Short: "Serve a CSI driver (Identity, Controller, Node) over gRPC",
		Long: `Serve a CSI driver. With --backend=local, every volume is a sparse disk image
in --pool, attached to a loop device and formatted (ext4, xfs, btrfs) or
published as a raw block device. With --backend=s3, every volume is an S3 (or
COS) bucket, or a prefix in one, mounted through FUSE by ` + "`volplug mounter`" + `;
--driver-name defaults to s3.csi.volplug.io.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Mode = csi.Mode(mode)
			opts.Version = version
			var b backend.Backend
			switch backendName {
			case "local":
				if pool == "" {
					return fmt.Errorf("--pool is required with --backend=local")
				}
				warm, err := local.ParseWarmPool(warmPool)
				if err != nil {
					return fmt.Errorf("--warm-pool: %w", err)
				}
				lb, err := local.New(pool, opts.NodeID, local.FormatOnCreate(formatOnCreate), local.DeleteInBackground(deleteInBackground), local.WarmPool(warm))
				if err != nil {
					return err
				}
				defer lb.Close() // stops background formats; their marks make the next stage redo them
				b = lb
			case "s3":
				if !cmd.Flags().Changed("driver-name") {
					opts.Name = "s3.csi.volplug.io"
				}
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				s3opts.Exe = exe
				b = s3.New(s3opts)
			default:
				return fmt.Errorf("backend %q: want local or s3", backendName)
			}
			d, err := csi.New(opts, b)
			if err != nil {
				return err
			}
			l, err := csi.Listen(endpoint)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			err = d.Serve(ctx, l)
			klog.Flush()
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&backendName, "backend", "local", "storage backend: local (disk images) or s3 (buckets)")
	f.StringVar(&endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint: unix:///path or tcp://host:port")
	f.StringVar(&opts.NodeID, "node-id", host, "this node's name")
	f.StringVar(&pool, "pool", "", "directory that holds the disk images (local backend)")
	f.BoolVar(&deleteInBackground, "delete-in-background", true, "DeleteVolume removes the volume at once and reclaims its space in the background; the space counts as used until then (local backend)")
	f.BoolVar(&formatOnCreate, "format-on-create", true, "format a new blank filesystem volume in the background right after CreateVolume; a stage that comes first waits for it (local backend)")
	f.StringVar(&warmPool, "warm-pool", "", "keep images formatted ahead, as size:fsType:count[,...] (e.g. 1Gi:ext4:2); a CreateVolume of that size and filesystem takes one, and its space counts as used (local backend)")
	f.StringVar(&opts.Name, "driver-name", "local.csi.volplug.io", "CSI driver name")
	f.StringVar(&mode, "mode", "all", "services to serve: all, controller or node")
	f.BoolVar(&opts.EnableAttach, "enable-attach", false, "advertise ControllerPublish and require it before NodeStage")
	f.Int64Var(&opts.MaxVolumesPerNode, "max-volumes-per-node", 0, "most volumes attached to one node (0: no limit)")
	f.StringVar(&opts.MetricsAddress, "metrics-address", "", "serve Prometheus metrics at http://ADDRESS/metrics, e.g. :9810 (off when empty)")
	f.BoolVar(&opts.ExpandOnNode, "expand-on-node", false, "grow disks in NodeExpandVolume and hide ControllerExpandVolume (for a cluster-wide external-resizer)")
	f.StringVar(&s3opts.Endpoint, "s3-endpoint", "", "s3: the S3 endpoint when a volume's secret and parameters name none")
	f.StringVar(&s3opts.Region, "s3-region", "", "s3: the region when a volume's secret and parameters name none")
	f.StringVar(&s3opts.MounterSocket, "mounter-socket", defaultMounterSocket, "s3: where `volplug mounter` answers")
	f.BoolVar(&s3opts.StartMounter, "start-mounter", true, "s3: start a detached mounter when none answers (off in Kubernetes, where it is a DaemonSet)")
	f.StringVar(&s3opts.MounterStateDir, "mounter-state-dir", defaultMounterState, "s3: the started mounter's --state-dir")
	f.StringVar(&s3opts.MounterLog, "mounter-log", "/var/log/volplug/mounter.log", "s3: the started mounter's log file")
	addKlogFlags(cmd)
	return cmd
}

// addKlogFlags exposes klog's verbosity flags (--v, --vmodule); logs go to
// stderr, where the container runtime collects them.
func addKlogFlags(cmd *cobra.Command) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "v" || f.Name == "vmodule" {
			cmd.Flags().AddGoFlag(f)
		}
	})
}
