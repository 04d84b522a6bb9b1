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
)

func main() {
	root := &cobra.Command{
		Use:           "volplug",
		Short:         "Storage for Kubernetes through CSI and FlexVolume",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newCSICommand(),
		ctl.NewCommand(),
		demo.NewCommand(),
		bench.NewCommand(),
	)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "volplug:", err)
		os.Exit(1)
	}
}
