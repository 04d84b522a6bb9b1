package flex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// The test binary doubles as a fake driver: with FLEX_FAKE_OUT set it
// prints that and exits with FLEX_FAKE_EXIT, as a driver executable would.
func TestMain(m *testing.M) {
	if out, ok := os.LookupEnv("FLEX_FAKE_OUT"); ok {
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
