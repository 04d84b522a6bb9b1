//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Enabled reports whether this binary was built with failpoints.
const Enabled = true

var (
	mu    sync.Mutex
	armed = parse(os.Getenv(Env)) // name -> hits left before the kill
)

// parse reads "a,b:2": a fires at its first hit, b at its second.
func parse(s string) map[string]int {
	out := map[string]int{}
	for _, f := range strings.Split(s, ",") {
		name, count, _ := strings.Cut(strings.TrimSpace(f), ":")
		if name == "" {
			continue
		}
		n, err := strconv.Atoi(count)
		if err != nil || n < 1 {
			n = 1
		}
		out[name] = n
	}
	return out
}

// Hit kills the process with SIGKILL when name is armed and this is the
// hit it waits for.
func Hit(name string) {
	mu.Lock()
	n, ok := armed[name]
	if ok {
		n--
		armed[name] = n
	}
	mu.Unlock()
	if !ok || n > 0 {
		return
	}
	msg := fmt.Sprintf("failpoint %s: SIGKILL pid %d\n", name, os.Getpid())
	os.Stderr.WriteString(msg)
	if path := os.Getenv(LogEnv); path != "" {
		// A crash test learns here which point fired in which process
		// (the mounter, say, rather than the driver it called).
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
			_, _ = f.WriteString(msg)
			_ = f.Sync()
			_ = f.Close()
		}
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way; do not take another step
}
