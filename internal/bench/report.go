package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Memory targets from the issue: the driver runs on every node, so its
// footprint is paid once per node.
const (
	TargetIdleMiB   = 25
	TargetLoadedMiB = 40
)

// Report is everything one run measured. Durations are in milliseconds and
// sizes in MiB so that the JSON reads without unit conversion.
type Report struct {
	Started    time.Time        `json:"started"`
	Setup      Setup            `json:"setup"`
	Driver     DriverInfo       `json:"driver"`
	DriverExit string           `json:"driver_exit,omitempty"`
	Steps      []string         `json:"driver_steps"`
	FloorSteps []string         `json:"floor_steps"`
	Levels     []Level          `json:"levels"`
	Memory     Memory           `json:"memory"`
	Headline   Headline         `json:"headline"`
	Snapshots  *SnapshotSection `json:"snapshots,omitempty"`
	Notes      []string         `json:"notes,omitempty"`
	Errors     []string         `json:"errors,omitempty"`
	Leftovers  *Leftovers       `json:"leftovers,omitempty"`
	Duration   JSONSeconds      `json:"duration_s"`
}

// Setup records the run's parameters.
type Setup struct {
	Backend    string `json:"backend"`
	SizeBytes  int64  `json:"size_bytes"`
	FsType     string `json:"fs_type"`
	AccessMode string `json:"access_mode"`
	Warmup     int    `json:"warmup"`
	CPUs       int    `json:"cpus"`
	Dir        string `json:"dir"`
}

// Level is one concurrency level, driver and floor side by side.
type Level struct {
	Concurrency int     `json:"concurrency"`
	Driver      *Series `json:"driver,omitempty"`
	Floor       *Series `json:"floor,omitempty"`
	// Ratios of the driver to the floor at the same level (latency: lower
	// is better, throughput: higher is better). 0 when not measured.
	CycleP50VsFloor   float64 `json:"cycle_p50_vs_floor,omitempty"`
	CycleP99VsFloor   float64 `json:"cycle_p99_vs_floor,omitempty"`
	ThroughputVsFloor float64 `json:"throughput_vs_floor,omitempty"`
}

// Series is one side (driver or floor) of a level.
type Series struct {
	Cycles     int        `json:"cycles"`
	Errors     int        `json:"errors"`
	FirstError string     `json:"first_error,omitempty"`
	WallS      float64    `json:"wall_s"`
	Throughput float64    `json:"volumes_per_second"`
	Cycle      Stat       `json:"cycle"`
	Steps      []StepStat `json:"steps"`
	PeakRSSMiB float64    `json:"peak_rss_mib,omitempty"`
}

// StepStat is the latency of one step.
type StepStat struct {
	Name string `json:"name"`
	Stat
}

// Stat is a Summary in milliseconds.
type Stat struct {
	N      int     `json:"n"`
	P50MS  float64 `json:"p50_ms"`
	P99MS  float64 `json:"p99_ms"`
	MinMS  float64 `json:"min_ms"`
	MaxMS  float64 `json:"max_ms"`
	MeanMS float64 `json:"mean_ms"`
}

// Memory is the driver's resident memory.
type Memory struct {
	IdleMiB         float64 `json:"idle_rss_mib"`
	PeakMiB         float64 `json:"peak_rss_mib"`
	PeakAt          int     `json:"peak_at_concurrency"`
	HWMMiB          float64 `json:"vm_hwm_mib"`
	Samples         int     `json:"samples"`
	TargetIdleMiB   float64 `json:"target_idle_mib"`
	TargetLoadedMiB float64 `json:"target_loaded_mib"`
}

// Headline is the figure the issue asks for first: the driver's c=1 full
// cycle against the floor's.
type Headline struct {
	DriverP50MS float64 `json:"driver_c1_cycle_p50_ms"`
	FloorP50MS  float64 `json:"floor_c1_cycle_p50_ms"`
	Ratio       float64 `json:"driver_vs_floor"`
}

// JSONSeconds marshals a duration as seconds.
type JSONSeconds time.Duration

// MarshalJSON writes seconds with millisecond precision.
func (s JSONSeconds) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, "%.3f", time.Duration(s).Seconds()), nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func statOf(samples []time.Duration) Stat {
	s := Summarize(samples)
	return Stat{N: s.Count, P50MS: ms(s.P50), P99MS: ms(s.P99), MinMS: ms(s.Min), MaxMS: ms(s.Max), MeanMS: ms(s.Mean)}
}

// seriesOf condenses a LevelResult.
func seriesOf(r LevelResult, steps []string) *Series {
	s := &Series{
		Cycles:     len(r.Totals),
		Errors:     len(r.Errors),
		WallS:      r.Wall.Seconds(),
		Throughput: Throughput(len(r.Totals), r.Wall),
		Cycle:      statOf(r.Totals),
	}
	if len(r.Errors) > 0 {
		s.FirstError = r.Errors[0].Error()
	}
	for i, name := range steps {
		s.Steps = append(s.Steps, StepStat{Name: name, Stat: statOf(r.Steps[i])})
	}
	return s
}

// compare fills in a level's ratios and, at c=1, the headline.
func (r *Report) compare() {
	for i := range r.Levels {
		l := &r.Levels[i]
		if l.Driver == nil || l.Floor == nil {
			continue
		}
		l.CycleP50VsFloor = Ratio(l.Driver.Cycle.P50MS, l.Floor.Cycle.P50MS)
		l.CycleP99VsFloor = Ratio(l.Driver.Cycle.P99MS, l.Floor.Cycle.P99MS)
		l.ThroughputVsFloor = Ratio(l.Driver.Throughput, l.Floor.Throughput)
		if l.Concurrency == 1 {
			r.Headline = Headline{
				DriverP50MS: l.Driver.Cycle.P50MS,
				FloorP50MS:  l.Floor.Cycle.P50MS,
				Ratio:       l.CycleP50VsFloor,
			}
		}
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	return nil
}

func fmtMS(v float64, n int) string {
	switch {
	case n == 0:
		return "-"
	case v < 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func fmtRatio(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

func fmtRate(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

func verdict(v, limit float64) string {
	switch {
	case v == 0:
		return "-"
	case v <= limit:
		return "ok"
	default:
		return "OVER"
	}
}

// WriteText writes the human-readable tables.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	p := func(format string, a ...any) { fmt.Fprintf(ew, format, a...) }
	if len(r.Levels) == 0 {
		// No load measured (--snapshots-only, or an early failure):
		// only the snapshot section and the errors are worth printing.
		if r.Snapshots != nil {
			if err := r.writeSnapshots(ew); err != nil {
				return err
			}
			p("\n")
		}
		return r.writeTail(ew)
	}

	p("volplug bench: %s backend, %s %s mount %s, driver %s %s (pid %d), %d CPUs\n",
		r.Setup.Backend, sizeString(r.Setup.SizeBytes), r.Setup.FsType, r.Setup.AccessMode,
		orDash(r.Driver.Name), r.Driver.Version, r.Driver.PID, r.Setup.CPUs)
	p("driver cycle: %s\n", strings.Join(r.Steps, " -> "))
	if !r.Driver.ControllerPublish {
		p("  (ControllerPublish not advertised%s)\n", map[bool]string{true: " although --attach was given", false: ""}[r.Driver.AttachRequested])
	}
	p("floor cycle:  %s (system tools, no shell)\n\n", strings.Join(r.FloorSteps, " -> "))

	// Latency table: one row per step, p50/p99 per level.
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	header := "latency ms\t"
	for _, l := range r.Levels {
		header += fmt.Sprintf("c=%d p50\tp99\t", l.Concurrency)
	}
	fmt.Fprintln(tw, header)
	row := func(label string, get func(Level) (Stat, bool)) {
		line := label + "\t"
		for _, l := range r.Levels {
			s, ok := get(l)
			if !ok {
				line += "-\t-\t"
				continue
			}
			line += fmtMS(s.P50MS, s.N) + "\t" + fmtMS(s.P99MS, s.N) + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	for i, name := range r.Steps {
		row(name, func(l Level) (Stat, bool) {
			if l.Driver == nil || i >= len(l.Driver.Steps) {
				return Stat{}, false
			}
			return l.Driver.Steps[i].Stat, true
		})
	}
	row("full cycle, driver", func(l Level) (Stat, bool) {
		if l.Driver == nil {
			return Stat{}, false
		}
		return l.Driver.Cycle, true
	})
	row("full cycle, floor", func(l Level) (Stat, bool) {
		if l.Floor == nil {
			return Stat{}, false
		}
		return l.Floor.Cycle, true
	})
	line := "driver / floor\t"
	for _, l := range r.Levels {
		line += fmtRatio(l.CycleP50VsFloor) + "\t" + fmtRatio(l.CycleP99VsFloor) + "\t"
	}
	fmt.Fprintln(tw, line)
	fmt.Fprintln(tw, "\t")

	// Throughput and counts, one column pair per level again.
	header = "throughput vol/s\t"
	for _, l := range r.Levels {
		header += fmt.Sprintf("c=%d\t\t", l.Concurrency)
	}
	fmt.Fprintln(tw, header)
	seriesRow := func(label string, get func(Level) string) {
		line := label + "\t"
		for _, l := range r.Levels {
			line += get(l) + "\t\t"
		}
		fmt.Fprintln(tw, line)
	}
	seriesRow("driver", func(l Level) string {
		if l.Driver == nil {
			return "-"
		}
		return fmtRate(l.Driver.Throughput)
	})
	seriesRow("floor", func(l Level) string {
		if l.Floor == nil {
			return "-"
		}
		return fmtRate(l.Floor.Throughput)
	})
	seriesRow("driver / floor", func(l Level) string { return fmtRatio(l.ThroughputVsFloor) })
	seriesRow("cycles driver/floor", func(l Level) string {
		return countString(l.Driver) + "/" + countString(l.Floor)
	})
	seriesRow("driver peak RSS MiB", func(l Level) string {
		if l.Driver == nil || l.Driver.PeakRSSMiB == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", l.Driver.PeakRSSMiB)
	})
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}

	// Floor steps: where the baseline's time goes, for reading the
	// driver's per-RPC figures against.
	if len(r.FloorSteps) > 0 {
		p("\n")
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		header = "floor steps ms\t"
		for _, l := range r.Levels {
			header += fmt.Sprintf("c=%d p50\tp99\t", l.Concurrency)
		}
		fmt.Fprintln(tw, header)
		for i, name := range r.FloorSteps {
			row(name, func(l Level) (Stat, bool) {
				if l.Floor == nil || i >= len(l.Floor.Steps) {
					return Stat{}, false
				}
				return l.Floor.Steps[i].Stat, true
			})
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}

	p("\n")
	tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	m := r.Memory
	fmt.Fprintln(tw, "driver memory (VmRSS)\tMiB\ttarget\t")
	fmt.Fprintf(tw, "idle, before load\t%.1f\t< %.0f\t%s\n", m.IdleMiB, m.TargetIdleMiB, verdict(m.IdleMiB, m.TargetIdleMiB))
	fmt.Fprintf(tw, "peak under load (c=%d, %d samples)\t%.1f\t< %.0f\t%s\n", m.PeakAt, m.Samples, m.PeakMiB, m.TargetLoadedMiB, verdict(m.PeakMiB, m.TargetLoadedMiB))
	fmt.Fprintf(tw, "VmHWM at end\t%.1f\t< %.0f\t%s\n", m.HWMMiB, m.TargetLoadedMiB, verdict(m.HWMMiB, m.TargetLoadedMiB))
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}

	p("\n")
	if r.Snapshots != nil {
		if err := r.writeSnapshots(ew); err != nil {
			return err
		}
		p("\n")
	}
	return r.writeTail(ew)
}

// writeTail prints the headline, notes, errors and leftovers.
func (r *Report) writeTail(ew *errWriter) error {
	p := func(format string, a ...any) { fmt.Fprintf(ew, format, a...) }
	if h := r.Headline; h.Ratio != 0 {
		p("full cycle at c=1: driver p50 %s ms = %s floor (floor p50 %s ms)\n",
			fmtMS(h.DriverP50MS, 1), fmtRatio(h.Ratio), fmtMS(h.FloorP50MS, 1))
	}
	for _, n := range r.Notes {
		p("note: %s\n", n)
	}
	for _, e := range r.Errors {
		p("ERROR: %s\n", e)
	}
	if r.Leftovers != nil && !r.Leftovers.Empty() {
		p("LEFTOVERS: %s\n", r.Leftovers)
	}
	p("run took %.1f s\n", time.Duration(r.Duration).Seconds())
	return ew.err
}

func countString(s *Series) string {
	if s == nil {
		return "-"
	}
	if s.Errors > 0 {
		return fmt.Sprintf("%d(+%d err)", s.Cycles, s.Errors)
	}
	return fmt.Sprint(s.Cycles)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sizeString(b int64) string {
	const gib, mib = 1 << 30, 1 << 20
	if b%gib == 0 {
		return fmt.Sprintf("%d GiB", b/gib)
	}
	if b%mib == 0 {
		return fmt.Sprintf("%d MiB", b/mib)
	}
	return fmt.Sprintf("%d bytes", b)
}

// errWriter keeps the first write error so the table code stays readable.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	if err != nil {
		e.err = fmt.Errorf("write report: %w", err)
	}
	return n, err
}
