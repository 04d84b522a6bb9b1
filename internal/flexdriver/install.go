package flexdriver

import (
	"context"
	"encoding/json"
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
		cfg       Config
	)
	cmd := &cobra.Command{
		Use:   "install --plugin-dir DIR",
		Short: "Install this binary as a FlexVolume driver: DIR/volplug~<driver>/<driver>",
		Long: `Copy this executable into DIR/volplug~<driver>/<driver> (DIR is kubelet's
--volume-plugin-dir, by default /usr/libexec/kubernetes/kubelet-plugins/volume/exec).
The copy goes to a dot-file first and is renamed into place, so kubelet's prober,
which ignores dot-files, never runs a half-written driver. With --pool, --node,
--log-file or --attach it also writes the driver's volplug.json beside it (the
same way), holding those settings; without them an existing volplug.json is
left as it is. With --then-sleep it then waits for SIGTERM, as a DaemonSet's
container must.`,
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
			f := cmd.Flags()
			if f.Changed("pool") || f.Changed("node") || f.Changed("log-file") || f.Changed("attach") {
				conf, err := writeConfig(filepath.Dir(path), cfg)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "configured %s\n", conf)
			}
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
	f.StringVar(&cfg.Pool, "pool", "", "write volplug.json: the pool directory on the host (default /var/lib/volplug/flex/<driver>)")
	f.StringVar(&cfg.Node, "node", "", "write volplug.json: the node's name in Kubernetes (default the host name)")
	f.StringVar(&cfg.LogFile, "log-file", "", `write volplug.json: the driver's log file on the host, or "syslog"`)
	f.BoolVar(&cfg.Attach, "attach", false, "write volplug.json: report attach:true (single-node clusters only)")
	return cmd
}

// writeConfig writes cfg as dir/volplug.json, atomically, and returns its
// path. Empty fields are left out, so the driver's defaults apply to them.
// The paths must be absolute: the driver runs on the host, from kubelet,
// with no working directory of ours.
func writeConfig(dir string, cfg Config) (string, error) {
	for _, p := range []string{cfg.Pool, cfg.LogFile} {
		if p != "" && p != "syslog" && !filepath.IsAbs(p) {
			return "", fmt.Errorf("configure: %q is not an absolute path", p)
		}
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", fmt.Errorf("configure: %w", err)
	}
	dst := filepath.Join(dir, configFile)
	tmp := filepath.Join(dir, "."+configFile)
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("configure: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("configure: %w", err)
	}
	return dst, nil
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
