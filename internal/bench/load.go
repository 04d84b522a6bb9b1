package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Cycler is one way of doing a volume's full life: the driver or the floor.
// Sharing the interface is what keeps both measured the same way.
type Cycler interface {
	Steps() []string
	Cycle(ctx context.Context, name string) ([]time.Duration, error)
}

// LevelResult holds the raw samples of one concurrency level.
type LevelResult struct {
	Concurrency int
	Wall        time.Duration     // first start to last end
	Totals      []time.Duration   // one per completed cycle
	Steps       [][]time.Duration // Steps[i] holds step i of every completed cycle
	Errors      []error
}

// RunLevel runs n cycles with c workers. Each cycle is timed from the
// worker's point of view, so queueing inside the driver counts, as it would
// for a pod waiting for its volume. It stops early once more than
// maxErrors cycles failed, or when ctx is cancelled; cycles in flight
// finish (or tear down) before it returns, bounded by their own timeouts.
func RunLevel(ctx context.Context, cyc Cycler, c, n int, prefix string, maxErrors int) LevelResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := LevelResult{Concurrency: c, Steps: make([][]time.Duration, len(cyc.Steps()))}
	var (
		next atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				// A started cycle runs to its end even when the level
				// stops: cancelling RPCs would leave the driver working
				// on a volume we then could not tear down (ABORTED).
				durs, err := cyc.Cycle(context.WithoutCancel(ctx), fmt.Sprintf("%s-%04d", prefix, i))
				total := time.Since(t0)
				mu.Lock()
				if err != nil {
					res.Errors = append(res.Errors, err)
					if len(res.Errors) > maxErrors {
						cancel()
					}
				} else {
					res.Totals = append(res.Totals, total)
					for j, d := range durs {
						res.Steps[j] = append(res.Steps[j], d)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Wall = time.Since(start)
	return res
}

// Merge appends another run of the same level, as when a level is measured
// in alternating rounds; wall times add up so throughput stays
// cycles/busy-time.
func (r *LevelResult) Merge(o LevelResult) {
	r.Wall += o.Wall
	r.Totals = append(r.Totals, o.Totals...)
	if r.Steps == nil {
		r.Steps = make([][]time.Duration, len(o.Steps))
	}
	for i := range o.Steps {
		r.Steps[i] = append(r.Steps[i], o.Steps[i]...)
	}
	r.Errors = append(r.Errors, o.Errors...)
}

// Rounds picks how many alternating floor/driver rounds a level of n
// cycles at concurrency c is split into: up to want, but each round keeps
// at least 4 cycles per worker so that the ramp-up and the ragged end of a
// round do not dominate its throughput.
func Rounds(want, c, n int) int {
	return max(1, min(want, n/(4*c)))
}
