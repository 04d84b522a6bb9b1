package demo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// tool is a program the driver runs, and the Debian package that has it.
type tool struct {
	name, pkg string
}

// toolsFor lists what the driver needs on this machine to format and mount
// a volume of fsType. The driver runs them, not the demo; checking first
// turns a cryptic failure deep inside NodeStage into a one-line fix.
func toolsFor(fsType string) ([]tool, error) {
	tools := []tool{{"blkid", "util-linux"}, {"mount", "mount"}, {"umount", "mount"}}
	switch fsType {
	case "ext4":
		tools = append(tools, tool{"mkfs.ext4", "e2fsprogs"})
	case "xfs":
		tools = append(tools, tool{"mkfs.xfs", "xfsprogs"})
	case "btrfs":
		tools = append(tools, tool{"mkfs.btrfs", "btrfs-progs"})
	default:
		return nil, fmt.Errorf("--fs-type %q: want ext4, xfs or btrfs", fsType)
	}
	return tools, nil
}

// lookPath is exec.LookPath, replaceable in tests.
var lookPath = exec.LookPath

// geteuid is os.Geteuid, replaceable in tests.
var geteuid = os.Geteuid

// preflight refuses to start when the demo cannot succeed: it needs root
// (loop devices and mounts) and the tools the driver runs.
func preflight(fsType string) error {
	tools, err := toolsFor(fsType)
	if err != nil {
		return err
	}
	if geteuid() != 0 {
		return errors.New("the demo attaches loop devices and mounts filesystems, which needs root: run it with sudo")
	}
	var missing, pkgs []string
	for _, t := range tools {
		if _, err := lookPath(t.name); err != nil {
			missing = append(missing, t.name)
			if !contains(pkgs, t.pkg) {
				pkgs = append(pkgs, t.pkg)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: install with `apt-get install %s`",
			strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
	return nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
