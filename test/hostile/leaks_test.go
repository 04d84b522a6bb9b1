package hostile

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// record collects what the checkers report instead of failing the test.
type record struct{ msgs []string }

func (r *record) Helper() {}
func (r *record) Errorf(format string, args ...any) {
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

// TestSecretCheckersFindLeaks plants a leak of each kind TestSecretsGoNowhere
// looks for (a log line, a process's argv, a process's environment, a file
// others can read, the base64 form of a secret, a private file in a
// directory others can read) and one sanctioned place (a 0600 file in a
// 0700 directory): the checkers must report every leak, each under its
// own secret, and not the sanctioned file. A checker that stopped finding
// leaks would let TestSecretsGoNowhere pass over one.
func TestSecretCheckersFindLeaks(t *testing.T) {
	dir := t.TempDir()
	start := time.Now().Add(-time.Second)
	sec := &secrets{values: map[string]string{}}
	value := func(where string) string { return sec.new(where)["password"] }
	write := func(path, data string, mode os.FileMode) {
		t.Helper()
		must(t, os.MkdirAll(filepath.Dir(path), 0o700))
		must(t, os.WriteFile(path, []byte(data), mode))
		must(t, os.Chmod(path, mode))
	}

	logged := value("a log line")
	write(filepath.Join(dir, "driver.log"), "I1201 request secrets="+logged+"\n", 0o600)
	open := value("a 0644 file")
	write(filepath.Join(dir, "state.json"), `{"key":"`+open+`"}`, 0o644)
	encoded := value("a base64 form")
	write(filepath.Join(dir, "opts.json"), base64.StdEncoding.EncodeToString([]byte(encoded)), 0o644)
	inDir := value("a private file in an open mounter directory")
	must(t, os.MkdirAll(filepath.Join(dir, "mounter", "state"), 0o755))
	write(filepath.Join(dir, "mounter", "state", "passwd"), inDir, 0o600)
	kept := value("the sanctioned place")
	must(t, os.Mkdir(filepath.Join(dir, "private"), 0o700))
	write(filepath.Join(dir, "private", "passwd"), kept, 0o600)

	argv := value("a process's argv")
	// Long-lived: reading another process's argv or environment waits
	// for its memory map, which a process stuck on a frozen filesystem
	// (another test's) can hold for a minute; the leaks must outlive that.
	inArgv := exec.Command("/bin/sleep", "600")
	inArgv.Args = []string{"leak-" + argv, "600"}
	environ := value("a process's environment")
	inEnv := exec.Command("/bin/sleep", "600")
	inEnv.Env = []string{"LEAK=" + environ}
	for _, cmd := range []*exec.Cmd{inArgv, inEnv} {
		must(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}

	r := &record{}
	sec.scanProcs(r, "planted")
	sec.scanFiles(r, "planted", start, dir)
	for v, where := range sec.values {
		found := false
		for _, m := range r.msgs {
			found = found || strings.Contains(m, "the secret of "+where+" ")
		}
		switch {
		case v == kept && found:
			t.Errorf("the checkers report %s, where a secret may be", where)
		case v != kept && !found:
			t.Errorf("the checkers missed %s", where)
		}
	}
	for _, m := range r.msgs {
		t.Log(m)
	}
}
