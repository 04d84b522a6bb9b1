package flex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"
)

// Errors a caller tells apart, as kubelet does: a "Not supported" answer
// means "use the default", a "Failure" means the call failed.
var (
	ErrNotSupported = errors.New("not supported by the driver")
	ErrFailure      = errors.New("driver failed")
	// ErrBadOutput is output kubelet could not parse: not exactly one JSON
	// object with a known status.
	ErrBadOutput = errors.New("driver output is not one JSON object")
)

// drainGrace bounds how long Call keeps reading the output after the
// driver exits (or is killed): a daemon the driver forked (a FUSE server)
// may hold the pipe for as long as it lives. kubelet would hang there
// forever; the answer was printed before the driver exited, so what is in
// the pipe by then is the whole answer.
const drainGrace = time.Second

// Call runs `exe call args...` the way kubelet does: stdout and stderr
// together are the answer and must be exactly one JSON object. Cancel ctx
// to time the call out (kubelet only does so for waitforattach): the
// driver runs in its own process group, and the whole group is killed, so
// a child it left running cannot outlive a call that timed out. A child of
// a call that succeeded is left alone: it may be serving the mount.
//
// The error wraps ErrNotSupported, ErrFailure or ErrBadOutput, the ctx
// error, or the exec error; the Result is returned whenever one was parsed.
func Call(ctx context.Context, exe, call string, args ...string) (*Result, error) {
	cmd := exec.CommandContext(ctx, exe, append([]string{call}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group's ID is the driver's PID (Setpgid).
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = drainGrace
	out, execErr := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s %s: %w", exe, call, ctx.Err())
	}
	if errors.Is(execErr, exec.ErrWaitDelay) {
		// The driver exited 0 and something it started still holds the
		// pipe: the answer is what it printed.
		execErr = nil
	}
	res, err := DecodeResult(out)
	if err != nil {
		if execErr != nil {
			return nil, fmt.Errorf("%s %s: %w (%w)", exe, call, err, execErr)
		}
		return nil, fmt.Errorf("%s %s: %w", exe, call, err)
	}
	switch res.Status {
	case StatusNotSupported:
		return res, fmt.Errorf("%s %s: %w: %s", exe, call, ErrNotSupported, res.Message)
	case StatusFailure:
		return res, fmt.Errorf("%s %s: %w: %s", exe, call, ErrFailure, res.Message)
	}
	if execErr != nil {
		// kubelet calls this a driver bug: success printed, failure exited.
		return res, fmt.Errorf("%s %s: answered Success but %w", exe, call, execErr)
	}
	return res, nil
}

// DecodeResult parses a driver's whole output: one JSON object with a known
// status, and nothing but white space around it.
func DecodeResult(out []byte) (*Result, error) {
	dec := json.NewDecoder(bytes.NewReader(out))
	var res Result
	if err := dec.Decode(&res); err != nil {
		return nil, fmt.Errorf("%w: %v: %q", ErrBadOutput, err, clip(out))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: more follows the first object: %q", ErrBadOutput, clip(out))
	}
	switch res.Status {
	case StatusSuccess, StatusFailure, StatusNotSupported:
		return &res, nil
	}
	return nil, fmt.Errorf("%w: unknown status %q", ErrBadOutput, res.Status)
}

// clip keeps error messages short when a driver prints a lot.
func clip(b []byte) []byte {
	const max = 512
	if len(b) > max {
		return append(b[:max:max], "..."...)
	}
	return b
}
