package demo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// processesNaming lists the processes (not this one) with s in their argv,
// arguments separated by NUL as /proc/PID/cmdline has them. The demo finds
// the mounter this way: the driver started it detached, so it is nobody's
// child the demo could wait for.
func processesNaming(s string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}

// procLineage reads a process's parent and session from /proc/PID/stat
// ("pid (comm) state ppid pgrp session ..."; comm may hold spaces and
// parentheses, so the fields are counted from its last ')').
func procLineage(pid int) (ppid, sid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("process %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("process %d: unreadable stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return 0, 0, fmt.Errorf("process %d: short stat", pid)
	}
	ppid, err1 := strconv.Atoi(f[1])
	sid, err2 := strconv.Atoi(f[3])
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return ppid, sid, nil
}

// mounterArgv is how the mounter's argv names its socket.
func (s *s3Demo) mounterArgv() string {
	return "mounter\x00--socket\x00" + s.mounterSock + "\x00"
}

// mounterPids lists the running mounters of this demo's socket.
func (s *s3Demo) mounterPids() []int {
	return processesNaming(s.mounterArgv())
}

// stopMounter ends the mounter the driver started: SIGTERM (it stops
// answering and exits), SIGKILL after 15 s. No mounter (the walk failed
// before the first stage) is no error.
func (s *s3Demo) stopMounter() error {
	pids := s.mounterPids()
	if len(pids) == 0 {
		s.n.detail("no mounter is running for %s", s.mounterSock)
		return nil
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal mounter %d: %w", pid, err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(s.mounterPids()) > 0 {
		if time.Now().After(deadline) {
			for _, pid := range s.mounterPids() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			return fmt.Errorf("mounter %v ignored SIGTERM for 15 s and was killed", pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.n.detail("mounter %v exited", pids)
	return nil
}

// checkProcesses is part of the final check: no process started for this
// run is left. Every one of them (driver, mounter, s3fs or rclone, the S3
// server) has the private work dir in its argv.
func (s *s3Demo) checkProcesses() error {
	s.n.begin("", "Check that no process is left",
		"No driver, mounter, FUSE program or S3 server of this run: none has the work dir in its command line.")
	t0 := time.Now()
	var left []string
	for _, pid := range processesNaming(s.dir) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		left = append(left, fmt.Sprintf("pid %d: %s", pid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")))
	}
	var err error
	if len(left) > 0 {
		for _, l := range left {
			s.n.detail("left running: %s", l)
		}
		err = fmt.Errorf("%d process(es) of the demo left running", len(left))
	} else {
		s.n.detail("no process of this run is left")
	}
	s.n.end(time.Since(t0), err)
	return err
}
