package image

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the helper that enters the image: started
// with chrootEnv set, in a mount namespace of its own, it mounts /proc and
// binds /dev and /sys into the root filesystem, chroots there and runs what
// it is asked, with the environment in chrootEnvEnv (the image's, plus the
// test's keys). Nothing of the host's filesystem is reachable after that.
const (
	chrootEnv    = "VOLPLUG_IMAGE_TEST_ROOT"
	chrootEnvEnv = "VOLPLUG_IMAGE_TEST_ENV"
	// lookPathArg: look each following name up on the image's PATH.
	lookPathArg = "--lookpath"
	// runArg: run programs of the image, each to its end, one after another
	// (separated by andThen), printing each one's output on a line.
	runArg  = "--run"
	andThen = "--and-then"
)

func TestMain(m *testing.M) {
	if root := os.Getenv(chrootEnv); root != "" {
		enter(root, os.Args[1:])
	}
	os.Exit(m.Run())
}

func enter(root string, args []string) {
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "image helper: "+format+"\n", a...)
		os.Exit(127)
	}
	var env []string
	if err := json.Unmarshal([]byte(os.Getenv(chrootEnvEnv)), &env); err != nil {
		fail("%s: %v", chrootEnvEnv, err)
	}
	mounts := []struct {
		src, dst, fstype string
		flags            uintptr
	}{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"/dev", "dev", "", unix.MS_BIND | unix.MS_REC},
		{"/sys", "sys", "", unix.MS_BIND | unix.MS_REC},
	}
	for _, m := range mounts {
		dst := filepath.Join(root, m.dst)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			fail("%v", err)
		}
		if err := unix.Mount(m.src, dst, m.fstype, m.flags, ""); err != nil {
			fail("mount %s at %s: %v", m.src, dst, err)
		}
	}
	if err := unix.Chroot(root); err != nil {
		fail("chroot %s: %v", root, err)
	}
	if err := os.Chdir("/"); err != nil {
		fail("%v", err)
	}
	os.Clearenv()
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			os.Setenv(k, v)
		}
	}
	if len(args) == 0 {
		fail("nothing to run")
	}
	switch args[0] {
	case lookPathArg:
		missing := 0
		for _, name := range args[1:] {
			if _, err := exec.LookPath(name); err != nil {
				fmt.Printf("missing from the image: %s\n", name)
				missing++
			}
		}
		os.Exit(missing)
	case runArg:
		var cmds [][]string
		cur := []string{}
		for _, a := range args[1:] {
			if a == andThen {
				cmds, cur = append(cmds, cur), []string{}
				continue
			}
			cur = append(cur, a)
		}
		cmds = append(cmds, cur)
		for _, c := range cmds {
			cmd := exec.Command(c[0], c[1:]...)
			cmd.Env = env
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			err := cmd.Run()
			fmt.Println()
			if err != nil {
				fail("%s: %v", c, err)
			}
		}
		os.Exit(0)
	}
	// The entrypoint with its arguments: exec, so it gets the test's
	// SIGINT on a timeout and tears down.
	exe := args[0]
	if err := syscall.Exec(exe, args, env); err != nil {
		fail("exec %s: %v", exe, err)
	}
}
