package main

import "github.com/spf13/cobra"

// newCSICommand returns the `volplug csi` command. (Placeholder: being written.)
func newCSICommand() *cobra.Command {
	return &cobra.Command{Use: "csi", Short: "not yet written"}
}
