package mounter_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// spawner starts and kills mounters for a test from a helper process
// started before the test opens any file on a mount: a process forked
// from the test would inherit those files, and closing them at exec sends
// the kernel a FLUSH that waits for the very server being started.
type spawner struct {
	tb  testing.TB
	cmd *exec.Cmd
	in  *os.File
	out *bufio.Reader
}

func newSpawner(tb testing.TB, bin, log string, args ...string) *spawner {
	cmd := exec.Command(os.Args[0], "-test.run=^TestSpawnerHelper$")
	cmd.Env = append(os.Environ(), "VOLPLUG_SPAWNER="+strings.Join(append([]string{bin, log}, args...), "\n"))
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s := &spawner{tb: tb, cmd: cmd, in: in.(*os.File), out: bufio.NewReader(out)}
	tb.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	return s
}

func (s *spawner) do(op string) string {
	if _, err := fmt.Fprintln(s.in, op); err != nil {
		s.tb.Fatalf("spawner %s: %v", op, err)
	}
	line, err := s.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ok") {
		s.tb.Fatalf("spawner %s: %q %v", op, line, err)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "ok"))
}

// TestSpawnerHelper is the spawner's process (VOLPLUG_SPAWNER set):
// lines on stdin start, kill (SIGKILL) or stop (SIGTERM) one mounter.
func TestSpawnerHelper(t *testing.T) {
	spec := os.Getenv("VOLPLUG_SPAWNER")
	if spec == "" {
		t.Skip("the spawner helper of the crash tests")
	}
	parts := strings.Split(spec, "\n")
	bin, log, args := parts[0], parts[1], parts[2:]
	var cur *exec.Cmd
	wait := func(sig os.Signal) {
		if cur != nil {
			_ = cur.Process.Signal(sig)
			_ = cur.Wait()
			cur = nil
		}
	}
	defer wait(syscall.SIGTERM)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "start":
			f, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
			if err == nil {
				cur = exec.Command(bin, args...)
				cur.Stdout, cur.Stderr = f, f
				err = cur.Start()
				f.Close()
			}
			if err != nil {
				fmt.Println("error", err)
				continue
			}
		case "kill":
			wait(syscall.SIGKILL)
		case "term":
			wait(syscall.SIGTERM)
		case "upgrade": // a successor takes over; the old one exits
			f, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			next := exec.Command(bin, append(args, "--takeover")...)
			next.Stdout, next.Stderr = f, f
			err = next.Start()
			f.Close()
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			if cur != nil {
				_ = cur.Wait()
			}
			cur = next
		}
		if cur != nil {
			fmt.Println("ok", cur.Process.Pid)
		} else {
			fmt.Println("ok")
		}
	}
}
