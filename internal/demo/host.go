package demo

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// mountEntry is one line of /proc/self/mountinfo, the fields the demo shows.
type mountEntry struct {
	MountPoint string
	FsType     string
	Source     string
	Options    string
	Line       string
}

// mountinfoPath is a variable so tests can point it at a fixture.
var mountinfoPath = "/proc/self/mountinfo"

// readMounts parses mountinfo: "id parent maj:min root mountpoint opts
// [optional...] - fstype source superopts". The kernel escapes space, tab,
// newline and backslash in paths as \ooo octal.
func readMounts() ([]mountEntry, error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(b) < 2 {
			continue
		}
		out = append(out, mountEntry{
			MountPoint: unescapeOctal(a[4]),
			Options:    a[5],
			FsType:     b[0],
			Source:     unescapeOctal(b[1]),
			Line:       line,
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return out, nil
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// mountsUnder lists the mounts at or below dir.
func mountsUnder(dir string) ([]mountEntry, error) {
	all, err := readMounts()
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, m := range all {
		if under(m.MountPoint, dir) {
			out = append(out, m)
		}
	}
	return out, nil
}

// loopDevice is a loop device and the file behind it.
type loopDevice struct {
	Device      string
	BackingFile string
}

// sysBlock is a variable so tests can point it at a fixture tree.
var sysBlock = "/sys/block"

// loopsUnder lists loop devices whose backing file is at or below dir. The
// kernel appends " (deleted)" when the file was removed while attached,
// which is exactly the leak this check is for, so the suffix is ignored.
func loopsUnder(dir string) ([]loopDevice, error) {
	files, err := filepath.Glob(filepath.Join(sysBlock, "loop*", "loop", "backing_file"))
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	var out []loopDevice
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // detached between glob and read: not ours to report
		}
		backing := strings.TrimSuffix(strings.TrimRight(string(b), "\n"), " (deleted)")
		if under(backing, dir) {
			dev := filepath.Base(filepath.Dir(filepath.Dir(f)))
			out = append(out, loopDevice{Device: "/dev/" + dev, BackingFile: strings.TrimRight(string(b), "\n")})
		}
	}
	return out, nil
}

// leftovers describes what is still mounted or attached under dir, empty
// when nothing is.
func leftovers(dir string) ([]string, error) {
	var out []string
	mounts, err := mountsUnder(dir)
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		out = append(out, fmt.Sprintf("mount %s (%s from %s): umount %s", m.MountPoint, m.FsType, m.Source, m.MountPoint))
	}
	loops, err := loopsUnder(dir)
	if err != nil {
		return nil, err
	}
	for _, l := range loops {
		out = append(out, fmt.Sprintf("loop device %s on %s: losetup -d %s", l.Device, l.BackingFile, l.Device))
	}
	return out, nil
}
