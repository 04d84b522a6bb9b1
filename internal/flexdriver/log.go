package flexdriver

import (
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// openLog opens the log: the file at path (0600, in a 0700 directory, since
// option values other than secrets are logged), syslog when path is
// "syslog" or the file cannot be opened, and nowhere when neither works.
// Never stdout or stderr: kubelet reads those as the answer.
//
// sink is a file that stray writes to fd 1 and 2 can be pointed at: the log
// file, or /dev/null.
func openLog(path string) (log *slog.Logger, sink *os.File) {
	var w io.Writer = io.Discard
	if path != "syslog" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
			if err == nil {
				w, sink = f, f
			}
		}
	}
	if sink == nil {
		if s, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "volplug-flex"); err == nil {
			w = s
		}
		sink, _ = os.OpenFile(os.DevNull, os.O_WRONLY|unix.O_CLOEXEC, 0)
	}
	log = slog.New(slog.NewJSONHandler(w, nil)).With("pid", os.Getpid())
	// k8s.io/mount-utils logs through klog, whose default is stderr.
	klog.SetSlogLogger(log)
	return log, sink
}
