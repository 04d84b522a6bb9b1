package hostile

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

var flexLock = regexp.MustCompile(`/flex/locks/vol-[0-9a-f]{32}\.lock$`)

// hostState is what a rejected request must not change.
type hostState struct {
	mounts  []string // mount point, source, type and options
	loops   []string // loop device and its backing file
	tree    []string // every file under the watched dirs: path, mode, size, link target
	buckets []string // bucket/key size, on the S3 server
}

// watcher takes hostState snapshots. The machine is shared with other
// tests, so the mount table is watched where a case could change it:
// under the test's directory, and at the places a hostile path points at
// (the root and the usual system directories, whose mounts are counted
// whole).
type watcher struct {
	dir  string   // the test's directory
	skip []string // paths under dir that change on every call (logs, sockets, the S3 server's files)
	s3   *minio.Client
	// listBuckets: list the S3 server's buckets in each snapshot
	listBuckets bool
	sysDirs     []string
}

func newWatcher(dir string, s3 *minio.Client, skip ...string) *watcher {
	return &watcher{dir: dir, s3: s3, skip: skip,
		sysDirs: []string{"/", "/etc", "/tmp", "/root", "/usr", "/var", "/run", "/dev", "/home", "/opt", "/srv", "/boot", "/proc", "/sys"}}
}

func (w *watcher) snapshot(t *testing.T) hostState {
	t.Helper()
	var s hostState
	var err error
	if s.mounts, err = w.mounts(); err != nil {
		t.Fatal(err)
	}
	if s.loops, err = w.loops(boundLoops); err != nil {
		t.Fatal(err)
	}
	s.tree = w.tree()
	if w.s3 != nil && w.listBuckets {
		if s.buckets, err = w.buckets(); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// loops lists the loop devices that hold a file under the test's
// directory (device and backing file, as sysfs shows it), among the
// devices list names.
func (w *watcher) loops(list func() ([]string, error)) ([]string, error) {
	names, err := list()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join("/sys/block", name, "loop", "backing_file"))
		if backing := strings.TrimSpace(string(b)); err == nil && strings.HasPrefix(backing, w.dir) {
			out = append(out, name+" "+backing)
		}
	}
	slices.Sort(out)
	return out, nil
}

// boundLoops names the loop devices with a capacity, from /proc/partitions:
// one read, where looking for /sys/block/loopN/loop on each of the
// machine's ~1,000 loop devices takes some 125 ms (twice a case, it was
// most of the short table's time). A device bound to an empty file has no
// capacity and is not listed; allLoops, run around each door, sees those.
func boundLoops() ([]string, error) {
	f, err := os.Open("/proc/partitions")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 4 && strings.HasPrefix(fields[3], "loop") {
			out = append(out, fields[3])
		}
	}
	return out, sc.Err()
}

// allLoops names every bound loop device, from sysfs: the slow, complete
// listing.
func allLoops() ([]string, error) {
	files, err := filepath.Glob("/sys/block/loop*/loop")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(files))
	for _, f := range files {
		out = append(out, filepath.Base(filepath.Dir(f)))
	}
	return out, nil
}

// checkAllLoops fails t when the complete listing of loop devices under
// the test's directory differs from before, which it returns.
func (w *watcher) checkAllLoops(t *testing.T, before []string) []string {
	t.Helper()
	now, err := w.loops(allLoops)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		if d := diff(hostState{loops: before}, hostState{loops: now}); d != "" {
			t.Errorf("the cases changed the host's loop devices:\n%s", d)
		}
	}
	return now
}

func (w *watcher) mounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		point := fields[4]
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+2 >= len(fields) {
			continue
		}
		if strings.HasPrefix(point, w.dir) || slices.Contains(w.sysDirs, point) {
			// root, mount point, options, type, source: not the IDs, which
			// another test's mounts elsewhere change.
			out = append(out, strings.Join([]string{point, fields[3], fields[5], fields[sep+1], fields[sep+2]}, " "))
		}
	}
	slices.Sort(out)
	return out, sc.Err()
}

func (w *watcher) tree() []string {
	var out []string
	_ = filepath.WalkDir(w.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			out = append(out, path+" error "+err.Error())
			return nil
		}
		for _, s := range w.skip {
			if path == s || strings.HasPrefix(path, s+"/") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		// The flex driver's lock files (flex/locks/<volume ID>.lock, empty)
		// stay after their volume, by design: removing a flock file races
		// with its next user. A lock file with any other name is a change.
		if strings.HasSuffix(path, ".log") || d.Type()&fs.ModeSocket != 0 || flexLock.MatchString(path) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		line := fmt.Sprintf("%s %v", path, info.Mode())
		if info.Mode().IsRegular() {
			line += fmt.Sprintf(" %d", info.Size())
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(path)
			line += " -> " + target
		}
		out = append(out, line)
		return nil
	})
	return out
}

func (w *watcher) buckets() ([]string, error) {
	ctx := context.Background()
	bs, err := w.s3.ListBuckets(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, b := range bs {
		out = append(out, b.Name+"/")
		for o := range w.s3.ListObjects(ctx, b.Name, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				return nil, o.Err
			}
			out = append(out, fmt.Sprintf("%s/%s %d", b.Name, o.Key, o.Size))
		}
	}
	return out, nil
}

// diff names what changed between two states, "" when nothing did.
func diff(a, b hostState) string {
	var out []string
	for _, part := range []struct {
		name string
		a, b []string
	}{{"mount", a.mounts, b.mounts}, {"loop", a.loops, b.loops}, {"file", a.tree, b.tree}, {"object", a.buckets, b.buckets}} {
		// Counted, not just compared: a second mount stacked on "/" is a
		// change too.
		n := map[string]int{}
		for _, x := range part.a {
			n[x]--
		}
		for _, x := range part.b {
			n[x]++
		}
		for _, x := range slices.Sorted(maps.Keys(n)) {
			switch {
			case n[x] < 0:
				out = append(out, "- "+part.name+" "+x)
			case n[x] > 0:
				out = append(out, "+ "+part.name+" "+x)
			}
		}
	}
	return strings.Join(out, "\n")
}
