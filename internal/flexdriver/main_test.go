package flexdriver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volplug/volplug/pkg/flex"
)

// binDir holds the volplug binary, built once for the package, under the
// two names it answers to: <binDir>/volplug~local/local, as kubelet runs
// it, and <binDir>/volplug.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flexdriver-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := 0
	if !fuzzing() { // fuzz targets need no binary, and every fuzz worker runs TestMain
		code = build(dir)
	}
	if code == 0 {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func fuzzing() bool {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzz") {
			return true
		}
	}
	return false
}

func build(dir string) int {
	driver := filepath.Join(dir, "volplug~local", "local")
	cmd := exec.Command("go", "build", "-o", driver, "../../cmd/volplug")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build volplug: %v\n%s", err, out)
		return 1
	}
	if err := os.Link(driver, filepath.Join(dir, "volplug")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func driverBin() string  { return filepath.Join(binDir, "volplug~local", "local") }
func volplugBin() string { return filepath.Join(binDir, "volplug") }

// env is one test's driver set-up: a config in a temporary directory with
// the pool and the log there too.
type env struct {
	t    *testing.T
	dir  string
	cfg  Config
	bin  string
	logs string
}

func newEnv(t *testing.T, attach bool) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, bin: driverBin(), logs: filepath.Join(dir, "log", "flex.log")}
	e.cfg = Config{Pool: filepath.Join(dir, "pool"), Node: "node1", Attach: attach, LogFile: e.logs}
	data, err := json.Marshal(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "volplug.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ConfigEnv, path)
	return e
}

// run calls the driver as kubelet does and checks what kubelet checks: the
// combined stdout and stderr are exactly one JSON object, and the exit code
// fits the status (non-zero for a Failure only).
func (e *env) run(want flex.Status, args ...string) *flex.Result {
	e.t.Helper()
	res, err := runDriver(e.bin, args...)
	if err != nil {
		e.t.Fatalf("%v: %v", args, err)
	}
	if res.Status != want {
		e.t.Fatalf("%v: status %q (%s), want %q", args, res.Status, res.Message, want)
	}
	return res
}

func runDriver(bin string, args ...string) (*flex.Result, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return nil, err
	}
	res, derr := flex.DecodeResult(out)
	if derr != nil {
		return nil, derr
	}
	if failed := err != nil; failed != (res.Status == flex.StatusFailure) {
		return nil, fmt.Errorf("status %q with exit error %v: %s", res.Status, err, bytes.TrimSpace(out))
	}
	if res.Status == flex.StatusFailure && res.Message == "" {
		return nil, fmt.Errorf("a Failure without a message")
	}
	return res, nil
}

// options builds the JSON argument the way kubelet does: its own keys, then
// the user's options over them.
func options(name string, user map[string]string) string {
	m := map[string]string{
		flex.KeyFsType:         "ext4",
		flex.KeyReadWrite:      "rw",
		flex.KeyPVOrVolumeName: name,
	}
	for k, v := range user {
		m[k] = v
	}
	data, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(data)
}

func runInstall(dir string) ([]byte, error) {
	return exec.Command(volplugBin(), "flex", "install", "--plugin-dir", dir).CombinedOutput()
}
