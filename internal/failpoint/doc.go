// Package failpoint names the steps of volplug's mutating operations, so a
// crash test can kill the process at each one in turn (as etcd's and TiKV's
// failpoints do).
//
// A step is marked with one call, failpoint.Hit("local.create.image-made").
// In the release build (no build tag) Hit is an empty function the compiler
// inlines away: no branch, no string, no cost. Built with
// `-tags failpoints`, Hit looks its name up in the set given by the
// environment at start:
//
//	VOLPLUG_FAILPOINTS=local.create.image-made        kill at the first hit
//	VOLPLUG_FAILPOINTS=local.snapshot.renamed:2       kill at the second hit
//
// and kills its own process with SIGKILL there, after one line on stderr
// (and in the file $VOLPLUG_FAILPOINTS_LOG) saying which point fired.
// SIGKILL, not a panic or an exit: no deferred function, no Close, no
// flushed buffer runs, as when the OOM killer or a node's power takes the
// driver.
//
// test/crash finds every Hit in the source and fails when one has no
// scenario that reaches it, so no point goes untested silently.
package failpoint

// Env is the variable that arms failpoints (in a -tags failpoints build).
const Env = "VOLPLUG_FAILPOINTS"

// LogEnv names a file each firing point appends "failpoint NAME: SIGKILL
// pid PID" to before the kill (the same line goes to stderr).
const LogEnv = "VOLPLUG_FAILPOINTS_LOG"
