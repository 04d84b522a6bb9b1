package bench

import (
	"github.com/volplug/volplug/internal/testutil"

	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestMountSource(t *testing.T) {
	info := "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n" +
		"90 27 7:3 / /tmp/b/d/vols/v/staging rw,relatime - ext4 /dev/loop3 rw\n" +
		"91 27 7:3 / /tmp/b/d/vols/v/pod/target rw,relatime shared:5 - ext4 /dev/loop3 rw\n" +
		"92 27 7:4 / /tmp/with\\040space rw - xfs /dev/loop4 rw\n" +
		// Stacked on the same point: the last one is what is seen.
		"93 90 7:5 / /tmp/b/d/vols/v/staging rw - ext4 /dev/loop5 rw\n"
	for path, want := range map[string]string{
		"/tmp/b/d/vols/v/pod/target": "/dev/loop3",
		"/tmp/with space":            "/dev/loop4",
		"/tmp/b/d/vols/v/staging":    "/dev/loop5",
		"/":                          "/dev/vda",
		"/tmp/b":                     "",
	} {
		if got := mountSource(info, path); got != want {
			t.Errorf("mountSource(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestFsNameAndFloorCopy(t *testing.T) {
	if fsName(0xEF53) != "ext4" || fsName(0x58465342) != "xfs" || fsName(0x1234) != "0x1234" {
		t.Error("fsName")
	}
	if !mayReflink("xfs") || !mayReflink("btrfs") || mayReflink("ext4") || mayReflink("tmpfs") {
		t.Error("mayReflink")
	}
	if got := floorCopyArgs(poolPlain, "a", "b"); !slices.Equal(got, []string{"--sparse=always", "--reflink=never", "a", "b"}) {
		t.Errorf("plain cp args %q", got)
	}
	if got := floorCopyArgs(poolReflink, "a", "b"); !slices.Equal(got, []string{"--reflink=always", "a", "b"}) {
		t.Errorf("reflink cp args %q", got)
	}
	if got := floorCopyName(poolReflink); got != "cp --reflink=always + fsync" {
		t.Errorf("floor name %q", got)
	}
}

// Every order runs each phase once, and a snapshot is made before it is
// restored from or deleted; no phase holds one place in every order.
func TestSnapOrders(t *testing.T) {
	all := append(slices.Clone(snapOps[:4]), opFloorCopy)
	slices.Sort(all)
	places := map[string]map[int]bool{}
	for i := range len(snapOrders) + 1 {
		o := snapOrder(i)
		got := slices.Clone(o)
		slices.Sort(got)
		if !slices.Equal(got, all) {
			t.Fatalf("order %d = %q: not each phase once", i, o)
		}
		at := func(op string) int { return slices.Index(o, op) }
		if at(opSnapCreate) > at(opRestore) || at(opRestore) > at(opSnapDelete) {
			t.Errorf("order %d = %q: snapshot not made, restored, deleted in turn", i, o)
		}
		for j, op := range o {
			if places[op] == nil {
				places[op] = map[int]bool{}
			}
			places[op][j] = true
		}
	}
	for _, op := range []string{opSnapCreate, opRestore, opClone, opFloorCopy} {
		if len(places[op]) < 2 {
			t.Errorf("%s always at place %v", op, places[op])
		}
	}
}

func TestSnapCapsMissing(t *testing.T) {
	if got := snapCapsMissing(DriverInfo{Snapshots: true, Clones: true}); got != "" {
		t.Errorf("all there: %q", got)
	}
	if got := snapCapsMissing(DriverInfo{}); got != "CREATE_DELETE_SNAPSHOT and CLONE_VOLUME" {
		t.Errorf("none: %q", got)
	}
	if got := snapCapsMissing(DriverInfo{Snapshots: true}); got != "CLONE_VOLUME" {
		t.Errorf("no clones: %q", got)
	}
}

func sampleSnapshots() *SnapshotSection {
	pool := func(name, fs string, scale float64) SnapPool {
		p := SnapPool{Name: name, FsType: fs, WriteMS: 1500, Driver: "volplug dev"}
		for _, op := range snapOps {
			p.Ops = append(p.Ops, StepStat{Name: op, Stat: Stat{N: 5, P50MS: 100 * scale, MaxMS: 200 * scale}})
		}
		p.Floor = &StepStat{Name: floorCopyName(name), Stat: Stat{N: 5, P50MS: 50 * scale, MaxMS: 80 * scale}}
		return p
	}
	s := &SnapshotSection{VolumeBytes: 1 << 30, WrittenBytes: 512 << 20, Iterations: 5,
		Pools: []SnapPool{pool(poolPlain, "ext4", 10), pool(poolReflink, "xfs", 0.5)}}
	s.compare()
	return s
}

func TestSnapshotCompare(t *testing.T) {
	s := sampleSnapshots()
	if r := s.ratio(opSnapCreate); r.P50Ratio != 0.05 || r.MaxRatio != 0.05 {
		t.Errorf("CreateSnapshot ratio %+v", r)
	}
	if r := s.ratio(opFloorCopy); r.P50Ratio != 0.05 {
		t.Errorf("floor ratio %+v", r)
	}
	if got := s.Pools[0].SnapshotVsFloor; got != 2 {
		t.Errorf("snapshot vs floor %v", got)
	}
	// One pool skipped: no ratio rather than a made-up one.
	s.Pools[1] = SnapPool{Name: poolReflink, Skipped: "mkfs.xfs not found"}
	s.compare()
	if len(s.ReflinkVsPlain) != 0 {
		t.Errorf("ratios without a reflink pool: %+v", s.ReflinkVsPlain)
	}
	// A pool with no floor samples gives no floor ratio.
	p := SnapPool{Name: poolPlain, Ops: []StepStat{{Name: opSnapCreate, Stat: Stat{N: 1, P50MS: 3}}}}
	s = &SnapshotSection{Pools: []SnapPool{p}}
	s.compare()
	if s.Pools[0].SnapshotVsFloor != 0 {
		t.Error("ratio without a floor")
	}
}

func TestSnapshotText(t *testing.T) {
	// Alone (--snapshots-only) and after the load tables.
	for _, r := range []*Report{{Snapshots: sampleSnapshots()}, sampleReport()} {
		r.Snapshots = sampleSnapshots()
		var buf bytes.Buffer
		if err := r.WriteText(&buf); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		for _, want := range []string{
			"1 GiB ext4 volume with 512 MiB written", "plain p50", "reflink p50", "reflink/plain p50",
			"CreateSnapshot (incl. freeze)", "CreateVolume from snapshot", "NodeStage of restored volume",
			"cp --sparse=always --reflink=never + fsync", "cp --reflink=always + fsync",
			"floor: cp + fsync", "0.05x", "2.00x", "setup: write 512 MiB + fsync",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("text output lacks %q:\n%s", want, out)
			}
		}
		if !t.Failed() {
			t.Log("\n" + out)
		}
	}
	r := &Report{Snapshots: sampleSnapshots()}
	r.Snapshots.Pools[1] = SnapPool{Name: poolReflink, Skipped: "mkfs.xfs not found"}
	r.Snapshots.compare()
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "reflink pool: skipped: mkfs.xfs not found") || strings.Contains(out, "NaN") {
		t.Errorf("skipped pool:\n%s", out)
	}
}

func TestSnapshotJSON(t *testing.T) {
	r := sampleReport()
	r.Snapshots = sampleSnapshots()
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Snapshots struct {
			WrittenBytes int64 `json:"written_bytes"`
			Pools        []struct {
				Name  string `json:"name"`
				Ops   []map[string]any
				Floor map[string]any
			}
			ReflinkVsPlain []OpRatio `json:"reflink_vs_plain"`
		}
	}
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	s := back.Snapshots
	if s.WrittenBytes != 512<<20 || len(s.Pools) != 2 || len(s.Pools[1].Ops) != len(snapOps) ||
		s.Pools[1].Floor["name"] != "cp --reflink=always + fsync" || len(s.ReflinkVsPlain) != len(snapOps)+1 {
		t.Errorf("json: %s", buf.String())
	}
}

func TestSnapConfigDefaults(t *testing.T) {
	c := Config{Binary: "x"}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	if c.SnapIterations != 5 || c.SnapVolumeBytes != 1<<30 || c.SnapWriteBytes != 512<<20 || c.SnapPoolBytes != 8<<30 {
		t.Errorf("defaults %+v", c)
	}
	c = Config{Binary: "x", SnapVolumeBytes: 64 << 20, SnapWriteBytes: 64 << 20}
	if err := c.defaults(); err == nil {
		t.Error("data as large as the volume accepted")
	}
	if sizeString(512<<20) != "512 MiB" || sizeString(3<<30) != "3 GiB" || sizeString(1000) != "1000 bytes" {
		t.Error("sizeString")
	}
}

// TestSnapshotsSkippedByFakeDriver runs the section against the fake
// driver, which advertises no snapshots: both pools are skipped with a
// note, and the xfs pool is still made and torn down without leftovers.
func TestSnapshotsSkippedByFakeDriver(t *testing.T) {
	testutil.RequireRoot(t)
	t.Setenv(fakeDriverEnv, "1")
	cfg := fakeConfig(t)
	cfg.SnapshotsOnly = true
	cfg.SnapPoolBytes = 512 << 20
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	s := rep.Snapshots
	if s == nil || len(s.Pools) != 2 || len(rep.Levels) != 0 {
		t.Fatalf("report: %+v", rep)
	}
	_, noXFS := exec.LookPath("mkfs.xfs")
	for _, p := range s.Pools {
		want := "CREATE_DELETE_SNAPSHOT and CLONE_VOLUME"
		if p.Name == poolReflink && noXFS != nil {
			want = "mkfs.xfs not found"
		}
		if !strings.Contains(p.Skipped, want) {
			t.Errorf("%s pool: skipped %q, want %q", p.Name, p.Skipped, want)
		}
	}
	if noXFS == nil && s.Pools[1].FsType != "xfs" {
		t.Errorf("reflink pool on %q", s.Pools[1].FsType)
	}
	if len(rep.Notes) < 2 {
		t.Errorf("notes: %q", rep.Notes)
	}
	if _, err := os.Stat(rep.Setup.Dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s not removed: %v", rep.Setup.Dir, err)
	}
	if l, ferr := FindLeftovers(cfg.TempParent); ferr != nil || !l.Empty() {
		t.Errorf("left behind: %v %v", l, ferr)
	}
}
