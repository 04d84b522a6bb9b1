package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/mounter"
)

// Where the mounter listens and keeps its private files, unless told.
const (
	defaultMounterSocket = "/run/volplug/mounter.sock"
	defaultMounterState  = "/var/lib/volplug/mounter"
	defaultKeeperSocket  = "/run/volplug/keeper.sock"
)

func newMounterCommand() *cobra.Command {
	var socket, stateDir, logFile, keeperSocket string
	var detach, takeover bool
	cmd := &cobra.Command{
		Use:   "mounter",
		Short: "Own the FUSE mounts of object-storage volumes, so they outlive the CSI node plugin",
		Long: `Serve the FUSE mounts of object-storage volumes (built-in bucketfs, s3fs,
rclone) for the CSI node plugin and the FlexVolume driver, which ask for them
over a unix socket. Run it as a DaemonSet of its own, or let ` + "`volplug csi`" + `
start one detached when none answers. On SIGTERM it stops answering and exits;
built-in mounts end with it (without a keeper, below), unless a successor took
them over first: with
--takeover, a new mounter asks the one answering at the socket for its mounts
and serves them on without unmounting (an upgrade no pod notices); the old
one then exits. On a host, s3fs and rclone mounts go on (their
processes outlive it and the next mounter adopts them); in a pod they end with
the pod's PID namespace.

With --keeper-socket, each built-in mount's /dev/fuse fd is also held by a
keeper (` + "`volplug keeper`" + `), and what a successor needs is kept in
--state-dir: after a crash (kill -9, OOM) the next mounter started with the
same flags serves the mounts on, and pods see a pause, not an error. On
SIGTERM such a mounter leaves its built-in mounts to the keeper (stopped
between two requests, what was written stored first) rather than ending them,
and the next one serves them on likewise, nothing lost: in Kubernetes, with
the keeper in a DaemonSet of its own, the mounter's pod can be replaced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if detach {
				return startDetached(socket, stateDir, logFile, keeperSocket, takeover)
			}
			s, err := mounter.NewServer(stateDir)
			if err != nil {
				return err
			}
			if keeperSocket != "" {
				if err := s.UseKeeper(cmd.Context(), keeperSocket); err != nil {
					return err
				}
			}
			if takeover {
				if err := s.TakeOver(cmd.Context(), socket); err != nil {
					return err
				}
			}
			// Mounts a crashed predecessor left to the keeper; before
			// listening, so no call finds them half recovered.
			if err := s.RecoverKept(cmd.Context()); err != nil {
				return err
			}
			l, err := mounter.Listen(socket)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			klog.InfoS("mounter serving", "socket", socket, "stateDir", stateDir)
			err = s.Serve(ctx, l)
			klog.Flush()
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", defaultMounterSocket, "unix socket to serve")
	f.StringVar(&stateDir, "state-dir", defaultMounterState, "private directory (0700) for staging files and s3fs password files")
	f.StringVar(&logFile, "log-file", "", "with --detach: where the detached mounter logs")
	f.BoolVar(&detach, "detach", false, "start a mounter in a session of its own, not a child of this process, and return")
	f.BoolVar(&takeover, "takeover", false, "take over the mounts of the mounter answering at --socket (same --state-dir), then serve")
	f.StringVar(&keeperSocket, "keeper-socket", "", "the socket of a keeper (volplug keeper): built-in mounts survive a crash of this process (empty: they end with it)")
	addKlogFlags(cmd)
	return cmd
}

func newKeeperCommand() *cobra.Command {
	var socket, logFile string
	var grace time.Duration
	var detached bool
	cmd := &cobra.Command{
		Use:   "keeper",
		Short: "Hold the mounter's FUSE fds, so its built-in mounts survive a crash of the mounter",
		Long: `Hold a duplicate of the /dev/fuse fd of each built-in mount a mounter started
with --keeper-socket hands over, and nothing else. While the keeper holds it,
a killed mounter does not end the mount: requests wait until the next mounter
takes the fd back and serves on. When no mounter is connected for --grace,
the keeper aborts the mounts it holds (they answer ENOTCONN, which the node
plugin cleans up) rather than leave processes waiting forever. Run it beside
the mounter: a DaemonSet of its own (so that replacing the mounter's pod leaves
it running), or detached on a host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if detached {
				return detach(logFile, "keeper", "--socket", socket, "--grace", grace.String())
			}
			l, err := mounter.ListenKeeper(socket)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			klog.InfoS("keeper serving", "socket", socket, "grace", grace)
			err = mounter.NewKeeper(grace).Serve(ctx, l)
			klog.Flush()
			return err
		},
	}
	cmd.Flags().StringVar(&socket, "socket", defaultKeeperSocket, "unix socket to serve")
	cmd.Flags().DurationVar(&grace, "grace", mounter.DefaultKeeperGrace, "how long mounts wait for a mounter to come back before they are aborted")
	cmd.Flags().BoolVar(&detached, "detach", false, "start a keeper in a session of its own, not a child of this process, and return")
	cmd.Flags().StringVar(&logFile, "log-file", "", "with --detach: where the detached keeper logs")
	addKlogFlags(cmd)
	return cmd
}

// startDetached starts `volplug mounter` in a new session with its output
// in logFile, and returns without waiting: this process exits at once, so
// the mounter is reparented to init (or the nearest subreaper) and is
// nobody's child to be reaped or killed with a process group. Where the
// cgroup v2 root is writable (a host, not a container) it also leaves the
// caller's cgroup, so stopping the caller's service does not stop it.
func startDetached(socket, stateDir, logFile, keeperSocket string, takeover bool) error {
	args := []string{"mounter", "--socket", socket, "--state-dir", stateDir}
	if takeover {
		args = append(args, "--takeover")
	}
	if keeperSocket != "" {
		args = append(args, "--keeper-socket", keeperSocket)
	}
	return detach(logFile, args...)
}

// detach starts `volplug args...` detached (see startDetached).
func detach(logFile string, args ...string) error {
	if logFile == "" {
		return fmt.Errorf("--detach needs --log-file")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(exe, args...)
	cmd.Args[0] = "volplug" // not a FlexVolume driver's name (see mounter.Client.EnsureRunning)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", args[0], err)
	}
	if f, err := os.OpenFile("/sys/fs/cgroup/cgroup.procs", os.O_WRONLY, 0); err == nil {
		_, _ = fmt.Fprintf(f, "%d\n", cmd.Process.Pid)
		f.Close()
	}
	return cmd.Process.Release()
}
