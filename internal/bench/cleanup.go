package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Leftovers is kernel state under the bench's directory that outlived the
// run: the thing a CSI driver must never leak on a real node.
type Leftovers struct {
	Mounts []string  `json:"mounts,omitempty"`
	Loops  []LoopDev `json:"loops,omitempty"`
}

// LoopDev is a loop device and its backing file.
type LoopDev struct {
	Dev     string `json:"dev"`
	Backing string `json:"backing_file"`
}

// Empty reports whether nothing was left behind.
func (l Leftovers) Empty() bool { return len(l.Mounts) == 0 && len(l.Loops) == 0 }

func (l Leftovers) String() string {
	var parts []string
	for _, m := range l.Mounts {
		parts = append(parts, "mount "+m)
	}
	for _, d := range l.Loops {
		parts = append(parts, d.Dev+" -> "+d.Backing)
	}
	return strings.Join(parts, "; ")
}

// underDir reports whether p is root or inside it. Both the given and the
// symlink-resolved spelling of root are tried: the kernel reports resolved
// paths.
func underDir(p string, roots ...string) bool {
	for _, r := range roots {
		if r == "" {
			continue
		}
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

func rootSpellings(root string) []string {
	out := []string{filepath.Clean(root)}
	if real, err := filepath.EvalSymlinks(root); err == nil && real != out[0] {
		out = append(out, real)
	}
	return out
}

// FindLeftovers lists mounts and loop devices whose mount point or backing
// file is under root.
func FindLeftovers(root string) (Leftovers, error) {
	roots := rootSpellings(root)
	var l Leftovers
	mounts, err := mountPoints()
	if err != nil {
		return l, err
	}
	for _, m := range mounts {
		if underDir(m, roots...) {
			l.Mounts = append(l.Mounts, m)
		}
	}
	loops, err := loopDevices()
	if err != nil {
		return l, err
	}
	for _, d := range loops {
		if underDir(d.Backing, roots...) {
			l.Loops = append(l.Loops, d)
		}
	}
	return l, nil
}

// mountPoints returns every mount point of this mount namespace.
func mountPoints() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return parseMountInfo(string(data)), nil
}

// parseMountInfo extracts field 5 (the mount point) of each mountinfo line;
// see proc(5).
func parseMountInfo(data string) []string {
	var out []string
	for line := range strings.SplitSeq(data, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		out = append(out, unescapeMountInfo(f[4]))
	}
	return out
}

// unescapeMountInfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in mountinfo paths.
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isMountPoint(p string) bool {
	mounts, err := mountPoints()
	if err != nil {
		// Unknown: let umount decide.
		return true
	}
	return slices.Contains(mounts, filepath.Clean(p))
}

// loopDevices lists loop devices with a backing file, from sysfs.
func loopDevices() ([]LoopDev, error) {
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	var out []LoopDev
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			// Detached between Glob and ReadFile.
			continue
		}
		backing := strings.TrimSuffix(strings.TrimRight(string(data), "\n"), " (deleted)")
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(f)))
		out = append(out, LoopDev{Dev: dev, Backing: backing})
	}
	return out, nil
}

// ForceCleanup removes leftovers: deepest mounts first (a bind mount sits
// below its source in no particular order, so length is the safe proxy),
// then loop devices.
func ForceCleanup(l Leftovers) error {
	var errs []error
	mounts := slices.Clone(l.Mounts)
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if err := syscall.Unmount(m, 0); err != nil {
			errs = append(errs, fmt.Errorf("umount %s: %w", m, err))
		}
	}
	for _, d := range l.Loops {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, "losetup", "-d", d.Dev).CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("losetup -d %s: %w: %s", d.Dev, err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}
