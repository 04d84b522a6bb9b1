package flex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake driver: with FLEX_FAKE_OUT set it
// prints that and exits with FLEX_FAKE_EXIT, as a driver executable would.
func TestMain(m *testing.M) {
	if out, ok := os.LookupEnv("FLEX_FAKE_OUT"); ok {
		if pidFile := os.Getenv("FLEX_FAKE_CHILD"); pidFile != "" {
			// A daemon that inherits the output pipe, as a FUSE server
			// started by a driver does.
			child := exec.Command("sleep", "60")
			child.Stdout = os.Stdout
			if err := child.Start(); err != nil {
				os.Exit(3)
			}
			// Whole or not at all: the test polls for it.
			_ = os.WriteFile(pidFile+".tmp", []byte(strconv.Itoa(child.Process.Pid)), 0o600)
			_ = os.Rename(pidFile+".tmp", pidFile)
		}
		fmt.Fprint(os.Stdout, out)
		fmt.Fprint(os.Stderr, os.Getenv("FLEX_FAKE_ERR"))
		if os.Getenv("FLEX_FAKE_SLEEP") != "" {
			time.Sleep(time.Minute)
		}
		if os.Getenv("FLEX_FAKE_EXIT") != "" {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCall(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, out, stderr string
		fail              bool
		wantErr           error // nil: success
		want              Status
	}{
		{name: "success", out: `{"status":"Success","device":"d"}` + "\n", want: StatusSuccess},
		{name: "failure", out: `{"status":"Failure","message":"no"}`, fail: true, wantErr: ErrFailure, want: StatusFailure},
		{name: "not supported, exit 1", out: `{"status":"Not supported"}`, fail: true, wantErr: ErrNotSupported, want: StatusNotSupported},
		{name: "not supported, exit 0", out: `{"status":"Not supported"}`, wantErr: ErrNotSupported, want: StatusNotSupported},
		{name: "log line on stderr", out: `{"status":"Success"}`, stderr: "I0101 log\n", wantErr: ErrBadOutput},
		{name: "two objects", out: `{"status":"Success"}{"status":"Success"}`, wantErr: ErrBadOutput},
		{name: "empty", out: ``, wantErr: ErrBadOutput},
		{name: "unknown status", out: `{"status":"Maybe"}`, wantErr: ErrBadOutput},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("FLEX_FAKE_OUT", c.out)
			t.Setenv("FLEX_FAKE_ERR", c.stderr)
			t.Setenv("FLEX_FAKE_EXIT", map[bool]string{true: "1"}[c.fail])
			res, err := Call(context.Background(), exe, CallMount, "/dir", "{}")
			if c.wantErr == nil && err != nil {
				t.Fatalf("err = %v", err)
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
			if c.want != "" && (res == nil || res.Status != c.want) {
				t.Fatalf("result = %+v, want status %q", res, c.want)
			}
		})
	}

	t.Run("success with failing exit is a driver bug", func(t *testing.T) {
		t.Setenv("FLEX_FAKE_OUT", `{"status":"Success"}`)
		t.Setenv("FLEX_FAKE_EXIT", "1")
		if _, err := Call(context.Background(), exe, CallInit); err == nil {
			t.Fatal("want an error")
		}
	})
	t.Run("a daemon holding the pipe does not hang a call", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		t.Setenv("FLEX_FAKE_OUT", `{"status":"Success"}`)
		t.Setenv("FLEX_FAKE_CHILD", pidFile)
		start := time.Now()
		res, err := Call(context.Background(), exe, CallMount, "/dir", "{}")
		if err != nil || res.Status != StatusSuccess {
			t.Fatalf("Call = %+v, %v", res, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %v", d)
		}
		pid := readPid(t, pidFile)
		if !alive(pid) {
			t.Error("the daemon of a successful call was killed")
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	})
	t.Run("an ended call kills the process group", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		t.Setenv("FLEX_FAKE_OUT", "")
		t.Setenv("FLEX_FAKE_SLEEP", "1")
		t.Setenv("FLEX_FAKE_CHILD", pidFile)
		// Ended once the child exists (a loaded machine may take a while
		// to start the fake), or after a minute at worst.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		go func() {
			for ctx.Err() == nil {
				if _, err := os.Stat(pidFile); err == nil {
					cancel()
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		if _, err := Call(ctx, exe, CallMount, "/dir", "{}"); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want canceled", err)
		}
		pid := readPid(t, pidFile)
		for i := 0; alive(pid) && i < 100; i++ {
			time.Sleep(20 * time.Millisecond) // the kernel delivers SIGKILL asynchronously
		}
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Error("the driver's child outlived the call")
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Setenv("FLEX_FAKE_OUT", "")
		t.Setenv("FLEX_FAKE_SLEEP", "1")
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		if _, err := Call(ctx, exe, CallWaitForAttach, "d", "{}"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("took %v", d)
		}
	})
}

func TestDecodeResultCapabilities(t *testing.T) {
	res, err := DecodeResult([]byte(` {"status":"Success","capabilities":{"attach":false}} ` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultCapabilities()
	want.Attach = false
	if *res.Capabilities != want {
		t.Errorf("capabilities = %+v, want kubelet's defaults but attach=false: %+v", *res.Capabilities, want)
	}
}

func TestResultAttachedFalseIsWritten(t *testing.T) {
	res := Success()
	res.Attached = Bool(false)
	got, err := DecodeResult(mustJSON(t, res))
	if err != nil || got.Attached == nil || *got.Attached {
		t.Fatalf("attached:false lost: %+v %v", got, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readPid(t *testing.T, file string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(data))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// alive reports whether pid runs (a zombie does not: it holds no pipe).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}
