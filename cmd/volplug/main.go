// Command volplug is one binary for every way Kubernetes can reach volplug's
// storage: a CSI driver, a FlexVolume driver, a flex-to-CSI adapter, a CSI
// client and a demo. main only wires the subcommands together.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/volplug/volplug/internal/bench"
	"github.com/volplug/volplug/internal/ctl"
	"github.com/volplug/volplug/internal/demo"
	"github.com/volplug/volplug/internal/flexdriver"
)

func main() {
	// kubelet runs the installed driver as <dir>/volplug~local/local <call>:
	// the call is argv[1], not a subcommand, so it bypasses cobra.
	if driver, ok := flexdriver.Invoked(); ok {
		os.Exit(flexdriver.Main(driver, os.Args[1:]))
	}
	root := &cobra.Command{
		Use:           "volplug",
		Short:         "Storage for Kubernetes through CSI and FlexVolume",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newCSICommand(),
		newAdaptCommand(),
		ctl.NewCommand(),
		demo.NewCommand(),
		bench.NewCommand(),
		flexdriver.NewCommand(),
		newMounterCommand(),
		newKeeperCommand(),
	)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "volplug:", err)
		os.Exit(1)
	}
}
