package ctl

import "github.com/spf13/cobra"

// NewCommand returns the `volplug ctl` command. (Placeholder: being written.)
func NewCommand() *cobra.Command {
	return &cobra.Command{Use: "ctl", Short: "not yet written"}
}
