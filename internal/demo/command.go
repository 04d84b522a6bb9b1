package demo

import "github.com/spf13/cobra"

// NewCommand returns the `volplug demo` command. (Placeholder: being written.)
func NewCommand() *cobra.Command {
	return &cobra.Command{Use: "demo", Short: "not yet written"}
}
