package flexdriver

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

func newInstallCommand() *cobra.Command {
	var (
		pluginDir string
		driver    string
		thenSleep bool
	)
	cmd := &cobra.Command{
		Use:   "install --plugin-dir DIR",
		Short: "Install this binary as a FlexVolume driver: DIR/volplug~<driver>/<driver>",
		Long: `Copy this executable into DIR/volplug~<driver>/<driver> (DIR is kubelet's
--volume-plugin-dir, by default /usr/libexec/kubernetes/kubelet-plugins/volume/exec).
The copy goes to a dot-file first and is renamed into place, so kubelet's prober,
which ignores dot-files, never runs a half-written driver. With --then-sleep it
then waits for SIGTERM, as a DaemonSet's container must.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: false,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !drivers[driver] {
				return fmt.Errorf("driver %q: only \"local\" exists", driver)
			}
			path, err := install(pluginDir, driver)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s\n", path)
			if thenSleep {
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				<-ctx.Done()
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&pluginDir, "plugin-dir", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec", "kubelet's FlexVolume plugin directory")
	f.StringVar(&driver, "driver", "local", "backend to install the driver for")
	f.BoolVar(&thenSleep, "then-sleep", false, "after installing, wait for a signal (for a DaemonSet)")
	return cmd
}

// install copies the running executable to pluginDir/volplug~driver/driver
// atomically and returns the path.
func install(pluginDir, driver string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	dir := filepath.Join(pluginDir, "volplug~"+driver)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	dst := filepath.Join(dir, driver)
	tmp := filepath.Join(dir, "."+driver)
	if err := copyFile(exe, tmp); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("install: %w", err)
	}
	// rename(2) swaps the name in one step; a kubelet running the old
	// driver keeps its inode, a new call gets the new one.
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("install: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return dst, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	// O_TRUNC: a dot-file left by an earlier, interrupted install is reused.
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Chmod(0o755) // OpenFile's mode is filtered by the umask
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
