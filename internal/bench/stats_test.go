package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func ms2d(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	s := ms2d(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	for _, tc := range []struct {
		p    float64
		want int
	}{{50, 5}, {99, 10}, {90, 9}, {10, 1}, {1, 1}, {100, 10}} {
		if got := Percentile(s, tc.p); got != time.Duration(tc.want)*time.Millisecond {
			t.Errorf("p%v = %v, want %dms", tc.p, got, tc.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
	// 200 samples: p99 is the 198th, not the maximum.
	var big []time.Duration
	for i := 1; i <= 200; i++ {
		big = append(big, time.Duration(i))
	}
	if got := Percentile(big, 99); got != 198 {
		t.Errorf("p99 of 1..200 = %v, want 198", got)
	}
}

func TestSummarizeKeepsInputOrder(t *testing.T) {
	in := ms2d(30, 10, 20)
	s := Summarize(in)
	if s.Count != 3 || s.Min != 10*time.Millisecond || s.P50 != 20*time.Millisecond ||
		s.Max != 30*time.Millisecond || s.Mean != 20*time.Millisecond {
		t.Errorf("summary %+v", s)
	}
	if in[0] != 30*time.Millisecond {
		t.Error("Summarize sorted its input")
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("empty summary not zero")
	}
}

func TestRatioAndThroughput(t *testing.T) {
	if r := Ratio(85, 100); r != 0.85 {
		t.Errorf("ratio %v", r)
	}
	if Ratio(1, 0) != 0 || Ratio(0, 1) != 0 {
		t.Error("missing side must give 0")
	}
	if v := Throughput(50, 2*time.Second); v != 25 {
		t.Errorf("throughput %v", v)
	}
	if Throughput(0, time.Second) != 0 || Throughput(3, 0) != 0 {
		t.Error("throughput of nothing must be 0")
	}
}

func TestParseStatus(t *testing.T) {
	data := []byte("Name:\tvolplug\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\n")
	if v, err := parseStatusKB(data, "VmRSS"); err != nil || v != 12345 {
		t.Errorf("VmRSS = %v, %v", v, err)
	}
	if _, err := parseStatusKB(data, "VmSwap"); err == nil {
		t.Error("missing field: no error")
	}
	// Our own process always has both.
	if v, err := procStatusKB(os.Getpid(), "VmHWM"); err != nil || v <= 0 {
		t.Errorf("own VmHWM = %v, %v", v, err)
	}
}

func TestRSSSamplerSeesOwnProcess(t *testing.T) {
	s := StartRSSSampler(os.Getpid(), time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	peak, n, err := s.Stop()
	if err != nil || n < 2 || peak <= 0 {
		t.Errorf("peak %d KiB, %d samples, err %v", peak, n, err)
	}
	// A process that does not exist gives an error, not a hang.
	s = StartRSSSampler(1<<30, time.Millisecond)
	if _, _, err := s.Stop(); err == nil {
		t.Error("no error for a missing pid")
	}
}

func TestParseLevels(t *testing.T) {
	got, err := ParseLevels("1, 8,32")
	if err != nil || len(got) != 3 || got[0] != 1 || got[1] != 8 || got[2] != 32 {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "1,x", "-2"} {
		if _, err := ParseLevels(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestMountInfoParsing(t *testing.T) {
	info := "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n" +
		"37 35 7:0 / /tmp/volplug-bench-1/d/vols/v/pod/target rw - ext4 /dev/loop0 rw\n"
	got := parseMountInfo(info)
	if len(got) != 2 || got[0] != "/mnt/with space" || got[1] != "/tmp/volplug-bench-1/d/vols/v/pod/target" {
		t.Errorf("got %q", got)
	}
	for in, want := range map[string]string{`a\134b`: `a\b`, `end\`: `end\`, `x\09`: `x\09`, `tab\011`: "tab\t"} {
		if got := unescapeMountInfo(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
	if !underDir("/tmp/volplug-bench-1/d", "/tmp/volplug-bench-1") ||
		!underDir("/tmp/volplug-bench-1", "/tmp/volplug-bench-1") ||
		underDir("/tmp/volplug-bench-10/x", "/tmp/volplug-bench-1") {
		t.Error("underDir")
	}
}

func sampleReport() *Report {
	mk := func(p50 float64, steps ...string) *Series {
		s := &Series{Cycles: 40, Throughput: 1000 / p50, Cycle: Stat{N: 40, P50MS: p50, P99MS: p50 * 2}}
		for _, n := range steps {
			s.Steps = append(s.Steps, StepStat{Name: n, Stat: Stat{N: 40, P50MS: 0.5, P99MS: 3}})
		}
		return s
	}
	r := &Report{
		Setup:      Setup{Backend: "local", SizeBytes: 1 << 30, FsType: "ext4", AccessMode: "SINGLE_NODE_WRITER", CPUs: 2},
		Driver:     DriverInfo{Name: "volplug.csi", Version: "dev", PID: 42, StageUnstage: true},
		Steps:      []string{stepCreate, stepStage, stepPublish, stepUnpublish, stepUnstage, stepDelete},
		FloorSteps: floorSteps,
		Memory:     Memory{IdleMiB: 12, PeakMiB: 41, PeakAt: 32, HWMMiB: 41.5, Samples: 100, TargetIdleMiB: 25, TargetLoadedMiB: 40},
	}
	r.Levels = []Level{
		{Concurrency: 1, Driver: mk(85, r.Steps...), Floor: mk(100, floorSteps...)},
		{Concurrency: 8, Driver: mk(200, r.Steps...)},
	}
	r.Levels[0].Driver.PeakRSSMiB = 20
	r.compare()
	return r
}

func TestReportRatiosAndText(t *testing.T) {
	r := sampleReport()
	if r.Headline.Ratio != 0.85 || r.Levels[0].CycleP50VsFloor != 0.85 || r.Levels[1].CycleP50VsFloor != 0 {
		t.Fatalf("ratios: headline %+v, levels %+v", r.Headline, r.Levels)
	}
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"c=1 p50", "c=8 p50", "NodeStage", "full cycle, floor", "0.85x",
		"= 0.85x floor", "OVER", "idle, before load", "mkfs", "ControllerPublish not advertised",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Inf") || strings.Contains(out, "NaN") {
		t.Errorf("missing floor printed as a number:\n%s", out)
	}
	if !t.Failed() {
		t.Log("\n" + out)
	}
}

func TestReportJSON(t *testing.T) {
	r := sampleReport()
	r.Duration = JSONSeconds(1500 * time.Millisecond)
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.String())
	}
	h := back["headline"].(map[string]any)
	if h["driver_vs_floor"].(float64) != 0.85 || back["duration_s"].(float64) != 1.5 {
		t.Errorf("json: %s", buf.String())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestReportWriteErrorSurfaces(t *testing.T) {
	if err := sampleReport().WriteText(failWriter{}); err == nil {
		t.Error("write error swallowed")
	}
}

func TestRoundsAndMerge(t *testing.T) {
	for _, tc := range []struct{ want, c, n, got int }{
		{4, 1, 40, 4}, {4, 8, 160, 4}, {4, 32, 192, 1}, {4, 8, 40, 1}, {0, 1, 40, 1},
	} {
		if got := Rounds(tc.want, tc.c, tc.n); got != tc.got {
			t.Errorf("Rounds(%d, c=%d, n=%d) = %d, want %d", tc.want, tc.c, tc.n, got, tc.got)
		}
	}
	var r LevelResult
	r.Merge(LevelResult{Wall: time.Second, Totals: ms2d(1, 2), Steps: [][]time.Duration{ms2d(1, 2)}})
	r.Merge(LevelResult{Wall: time.Second, Totals: ms2d(3), Steps: [][]time.Duration{ms2d(3)}, Errors: []error{errors.New("x")}})
	if r.Wall != 2*time.Second || len(r.Totals) != 3 || len(r.Steps[0]) != 3 || len(r.Errors) != 1 {
		t.Errorf("merged %+v", r)
	}
}
