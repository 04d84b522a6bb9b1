package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"

	"github.com/volplug/volplug/internal/ctl"
)

// driverProc is `volplug csi` running as a child of the demo.
type driverProc struct {
	cmd     *exec.Cmd
	log     *os.File
	logPath string
	exited  chan struct{} // closed when the process is gone
	waitErr error         // valid after exited is closed
}

// startDriver re-executes this binary as the driver, so the demo always
// runs the driver it was built with, never another one on $PATH.
func startDriver(args []string, logPath string) (*driverProc, error) {
	return startVolplug("csi", args, logPath)
}

// startVolplug runs `volplug <sub> args...` as the demo's child.
func startVolplug(sub string, args []string, logPath string) (*driverProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("driver log: %w", err)
	}
	cmd := exec.Command(self, append([]string{sub}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C at the terminal reaches the demo
		// only, so the demo can still unmount through the driver before it
		// stops it.
		Setpgid: true,
		// If the demo dies anyway, the driver must not outlive it.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s %s: %w", self, sub, err)
	}
	d := &driverProc{cmd: cmd, log: logf, logPath: logPath, exited: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	return d, nil
}

// waitReady waits for the socket to appear, then for Probe to say ready.
// It gives up early if the driver exits, which is how a bad flag or a
// missing pool shows up.
func (d *driverProc) waitReady(ctx context.Context, sock string) (*grpc.ClientConn, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			break
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("driver exited before serving: %v", d.waitErr)
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s: %w", sock, ctx.Err())
		case <-tick.C:
		}
	}
	conn, err := ctl.Dial(ctx, "unix://"+sock)
	if err != nil {
		return nil, err
	}
	id := csi.NewIdentityClient(conn)
	for {
		r, err := id.Probe(ctx, &csi.ProbeRequest{})
		if err == nil && ctl.ProbeReady(r) {
			return conn, nil
		}
		select {
		case <-d.exited:
			conn.Close()
			return nil, fmt.Errorf("driver exited before ready: %v", d.waitErr)
		case <-ctx.Done():
			conn.Close()
			if err == nil {
				err = errors.New("probe says not ready")
			}
			return nil, fmt.Errorf("waiting for Probe: %w (last: %w)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// stop asks the driver to finish (SIGTERM: it drains calls in flight) and
// kills it if it has not gone after grace.
func (d *driverProc) stop(grace time.Duration) error {
	defer d.log.Close()
	select {
	case <-d.exited:
		return fmt.Errorf("driver had already exited: %v", d.waitErr)
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal driver: %w", err)
	}
	select {
	case <-d.exited:
		if d.waitErr != nil {
			return fmt.Errorf("driver exited badly after SIGTERM: %w", d.waitErr)
		}
		return nil
	case <-time.After(grace):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("driver ignored SIGTERM for %s and was killed", grace)
	}
}

// tail returns the last n lines of the driver log, for failure reports.
func (d *driverProc) tail(n int) []string {
	f, err := os.Open(d.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, strings.TrimRight(sc.Text(), "\r"))
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return lines
}
