package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Summary condenses one series of latencies. Percentiles use the
// nearest-rank method so that every reported figure is a latency that was
// really observed, never an interpolation between two runs; with fewer than
// 100 samples p99 is therefore the maximum, which Count makes visible.
type Summary struct {
	Count int
	Min   time.Duration
	P50   time.Duration
	P99   time.Duration
	Max   time.Duration
	Mean  time.Duration
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, which must be in ascending order. It returns 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

// Summarize sorts a copy of samples and computes its Summary; the caller's
// slice keeps its order so it can still be matched against other series.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Summary{
		Count: len(s),
		Min:   s[0],
		P50:   Percentile(s, 50),
		P99:   Percentile(s, 99),
		Max:   s[len(s)-1],
		Mean:  sum / time.Duration(len(s)),
	}
}

// Ratio returns a/b, or 0 when either side is missing, so that an absent
// baseline prints as "-" rather than as Inf or NaN.
func Ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

// Throughput is completed volumes per second of wall-clock time.
func Throughput(n int, wall time.Duration) float64 {
	if n == 0 || wall <= 0 {
		return 0
	}
	return float64(n) / wall.Seconds()
}

// procStatusKB reads one "Key:   123 kB" field of /proc/<pid>/status.
func procStatusKB(pid int, key string) (int64, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/status"
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return parseStatusKB(data, key)
}

func parseStatusKB(data []byte, key string) (int64, error) {
	prefix := []byte(key + ":")
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, prefix) {
			continue
		}
		fields := bytes.Fields(line[len(prefix):])
		if len(fields) == 0 {
			return 0, fmt.Errorf("status field %s: no value", key)
		}
		v, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status field %s: %w", key, err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("status field %s: not found", key)
}

// KiBToMiB converts the kB unit of /proc (really KiB) to MiB.
func KiBToMiB(kb int64) float64 { return float64(kb) / 1024 }

// RSSSampler polls VmRSS of one process in the background. Polling is the
// only portable way to see a peak of a process we do not control; VmHWM
// gives the true peak afterwards but only over the whole process lifetime,
// which is why both are reported.
type RSSSampler struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	peakKB  int64
	samples int
	err     error
}

// StartRSSSampler begins sampling pid every interval until Stop.
func StartRSSSampler(pid int, interval time.Duration) *RSSSampler {
	s := &RSSSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop(pid, interval)
	return s
}

func (s *RSSSampler) loop(pid int, interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.sample(pid)
		select {
		case <-s.stop:
			// One last sample so that a load shorter than one interval
			// is still seen.
			s.sample(pid)
			return
		case <-t.C:
		}
	}
}

func (s *RSSSampler) sample(pid int) {
	kb, err := procStatusKB(pid, "VmRSS")
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	s.samples++
	s.peakKB = max(s.peakKB, kb)
}

// Stop ends sampling and returns the highest VmRSS seen (KiB) and how many
// samples were taken. The error is the first read failure, if any.
func (s *RSSSampler) Stop() (peakKB int64, samples int, err error) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakKB, s.samples, s.err
}
