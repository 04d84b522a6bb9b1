package bench

import "github.com/spf13/cobra"

// NewCommand returns the `volplug bench` command. (Placeholder: being written.)
func NewCommand() *cobra.Command {
	return &cobra.Command{Use: "bench", Short: "not yet written"}
}
