package bench

import (
	"fmt"
	"strings"
	"text/tabwriter"
)

// SnapshotSection is the snapshot and clone measurement: the same driver
// on a pool that cannot share blocks and on one that can.
type SnapshotSection struct {
	VolumeBytes  int64      `json:"volume_bytes"`
	WrittenBytes int64      `json:"written_bytes"`
	Iterations   int        `json:"iterations"`
	Pools        []SnapPool `json:"pools"`
	// ReflinkVsPlain is, per operation, the reflink pool's figure over
	// the plain pool's (lower: reflink is faster). Ops the floor's copy
	// last, under its own name.
	ReflinkVsPlain []OpRatio `json:"reflink_vs_plain,omitempty"`
}

// SnapPool is one pool's figures.
type SnapPool struct {
	Name    string     `json:"name"`
	Dir     string     `json:"dir,omitempty"`
	FsType  string     `json:"pool_fs,omitempty"`
	Driver  string     `json:"driver,omitempty"` // name and version, as it said
	Skipped string     `json:"skipped,omitempty"`
	Error   string     `json:"error,omitempty"`
	WriteMS float64    `json:"setup_write_ms,omitempty"` // writing the data and fsync, once
	Ops     []StepStat `json:"ops,omitempty"`
	// Floor is the same copy with cp, in the same run on the same pool.
	Floor *StepStat `json:"floor,omitempty"`
	// SnapshotVsFloor is CreateSnapshot's p50 over the floor's.
	SnapshotVsFloor float64 `json:"create_snapshot_vs_floor,omitempty"`
}

// OpRatio compares one operation across the pools.
type OpRatio struct {
	Name     string  `json:"name"`
	P50Ratio float64 `json:"p50_ratio"`
	MaxRatio float64 `json:"max_ratio"`
}

// op returns the named operation's figures, zero if not measured.
func (p *SnapPool) op(name string) Stat {
	for _, o := range p.Ops {
		if o.Name == name {
			return o.Stat
		}
	}
	return Stat{}
}

func (s *SnapshotSection) pool(name string) *SnapPool {
	for i := range s.Pools {
		if s.Pools[i].Name == name {
			return &s.Pools[i]
		}
	}
	return nil
}

// compare fills in the ratios from whatever was measured; a side that is
// missing gives no ratio rather than a misleading one.
func (s *SnapshotSection) compare() {
	for i := range s.Pools {
		p := &s.Pools[i]
		if p.Floor != nil {
			p.SnapshotVsFloor = Ratio(p.op(opSnapCreate).P50MS, p.Floor.P50MS)
		}
	}
	plain, reflink := s.pool(poolPlain), s.pool(poolReflink)
	s.ReflinkVsPlain = nil
	if plain == nil || reflink == nil {
		return
	}
	add := func(name string, a, b Stat) {
		if a.N == 0 || b.N == 0 {
			return
		}
		s.ReflinkVsPlain = append(s.ReflinkVsPlain, OpRatio{Name: name, P50Ratio: Ratio(a.P50MS, b.P50MS), MaxRatio: Ratio(a.MaxMS, b.MaxMS)})
	}
	for _, op := range snapOps {
		add(op, reflink.op(op), plain.op(op))
	}
	if plain.Floor != nil && reflink.Floor != nil {
		add(opFloorCopy, reflink.Floor.Stat, plain.Floor.Stat)
	}
}

func (s *SnapshotSection) ratio(name string) OpRatio {
	for _, r := range s.ReflinkVsPlain {
		if r.Name == name {
			return r
		}
	}
	return OpRatio{}
}

// writeSnapshots prints the section as one table: a p50/max column pair
// per pool and the reflink/plain ratio of the p50s.
func (r *Report) writeSnapshots(ew *errWriter) error {
	s := r.Snapshots
	p := func(format string, a ...any) { fmt.Fprintf(ew, format, a...) }
	p("snapshots and clones: %s ext4 volume with %s written, staged and published; %d iterations per pool\n",
		sizeString(s.VolumeBytes), sizeString(s.WrittenBytes), s.Iterations)
	for _, pl := range s.Pools {
		switch {
		case pl.Skipped != "":
			p("  %s pool: skipped: %s\n", pl.Name, pl.Skipped)
		case pl.Floor != nil:
			p("  %s pool on %s, driver %s; floor: %s of the image\n", pl.Name, orDash(pl.FsType), orDash(pl.Driver), pl.Floor.Name)
		default:
			p("  %s pool on %s, driver %s\n", pl.Name, orDash(pl.FsType), orDash(pl.Driver))
		}
	}
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	header := "latency ms\t"
	for _, pl := range s.Pools {
		header += fmt.Sprintf("%s p50\tmax\t", pl.Name)
	}
	fmt.Fprintln(tw, header+"reflink/plain p50\t")
	row := func(label string, get func(SnapPool) Stat, ratio OpRatio) {
		line := label + "\t"
		for _, pl := range s.Pools {
			st := get(pl)
			line += fmtMS(st.P50MS, st.N) + "\t" + fmtMS(st.MaxMS, st.N) + "\t"
		}
		fmt.Fprintln(tw, line+fmtRatio(ratio.P50Ratio)+"\t")
	}
	for _, op := range snapOps {
		label := op
		if op == opSnapCreate {
			label += " (incl. freeze)"
		}
		row(label, func(pl SnapPool) Stat { return pl.op(op) }, s.ratio(op))
	}
	row("floor: cp + fsync", func(pl SnapPool) Stat {
		if pl.Floor == nil {
			return Stat{}
		}
		return pl.Floor.Stat
	}, s.ratio(opFloorCopy))
	line := "CreateSnapshot / floor\t"
	for _, pl := range s.Pools {
		line += fmtRatio(pl.SnapshotVsFloor) + "\t\t"
	}
	fmt.Fprintln(tw, line+"\t")
	line = fmt.Sprintf("setup: write %s + fsync\t", sizeString(s.WrittenBytes))
	for _, pl := range s.Pools {
		line += fmtMS(pl.WriteMS, btoi(pl.WriteMS > 0)) + "\t\t"
	}
	fmt.Fprintln(tw, line+"\t")
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write snapshot table: %w", err)
	}
	for _, pl := range s.Pools {
		if pl.Error != "" {
			p("  %s pool: %s\n", pl.Name, firstLine(pl.Error))
		}
	}
	return nil
}

// firstLine keeps a table footnote to one line; the full error is in the
// report's errors.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
