package hostile

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// value is one hostile input and its label in the table.
type value struct {
	label string
	v     string
}

// The spec rules the table cites (CSI spec v1.13.0, spec.md).
const (
	ruleInvalid       = "spec §Error Scheme (general): invalid or unsupported field → 3 INVALID_ARGUMENT"
	ruleSize          = "spec §Size Limits: a string field is at most 128 bytes → 3 INVALID_ARGUMENT"
	ruleNegative      = "spec CapacityRange: required_bytes/limit_bytes MUST NOT be negative → 3 INVALID_ARGUMENT"
	ruleCapacity      = "spec CreateVolume: RESOURCE_EXHAUSTED (no room), OUT_OF_RANGE (capacity range not allowed)"
	ruleStats         = "spec NodeGetVolumeStats/NodeExpandVolume: no volume at volume_path → 5 NOT_FOUND (or 3 INVALID_ARGUMENT)"
	ruleVVC           = "spec ValidateVolumeCapabilities: unsupported capability → OK, `confirmed` empty"
	ruleListSnap      = "spec ListSnapshots: no snapshot matches → OK, empty list (or 3 INVALID_ARGUMENT)"
	ruleFlags         = "spec §Error Scheme (general): mount_flags value not allowed → 3 INVALID_ARGUMENT"
	ruleSymlink       = "spec §Error Scheme (general): a path the CO must create as a directory (or file) is a symlink → 3 INVALID_ARGUMENT"
	ruleDeleteMissing = "spec DeleteSnapshot/DeleteVolumeGroupSnapshot: a snapshot that does not exist → 0 OK (or 3 INVALID_ARGUMENT)"
	ruleFlex          = "FlexVolume: Failure JSON, non-zero exit, code INVALID_ARGUMENT (volplug's extension)"
)

// full runs every input; `make test` runs one of each kind (short), and
// `make hostile` the whole table (VOLPLUG_HOSTILE=full).
var full = os.Getenv("VOLPLUG_HOSTILE") == "full"

// short keeps, unless full, the values whose labels are named.
func short(vs []value, keep ...string) []value {
	if full {
		return vs
	}
	var out []value
	for _, v := range vs {
		if slices.Contains(keep, v.label) {
			out = append(out, v)
		}
	}
	return out
}

// hostileIDs are volume, snapshot and group IDs (and names) that try to
// leave the pool or reach a shell. outside is a directory beside the pool
// that nothing may touch.
func hostileIDs(outside string) []value {
	return short([]value{
		{"../ traversal", "../../" + filepath.Base(outside) + "/victim"},
		{"'..' alone", ".."},
		{"inner ..", "vol/../../x"},
		{"%2e%2e%2f encoded", "%2e%2e%2f%2e%2e%2f" + filepath.Base(outside)},
		{"..%2f encoded", "..%2f..%2fetc"},
		{"absolute path", outside + "/victim"},
		{"NUL byte", "vol\x00/../../x"},
		{"129 bytes (over 128)", strings.Repeat("a", 129)},
		{"256-byte component", strings.Repeat("b", 256)},
		{"4097 bytes total", strings.Repeat("c/", 2048) + "c"},
		{"; shell", "x;touch " + outside + "/pwn"},
		{"$() shell", "$(touch " + outside + "/pwn)"},
		{"backticks", "`touch " + outside + "/pwn`"},
		{"newline", "x\ntouch " + outside + "/pwn"},
	}, "../ traversal", "absolute path", "NUL byte", "129 bytes (over 128)", "$() shell")
}

// hostilePaths are staging, target and volume paths that are not an
// absolute, clean path of at most PATH_MAX bytes with names of at most
// NAME_MAX bytes.
func hostilePaths(dir string) []value {
	return short([]value{
		{"relative", "rel/target"},
		{"../ escape", dir + "/../../etc/hostile"},
		{"NUL byte", dir + "/t\x00/etc"},
		{"256-byte component", dir + "/" + strings.Repeat("n", 256)},
		{"4097 bytes total", dir + "/" + strings.Repeat("p/", 2048)},
		{"newline", dir + "/t\nx"},
	}, "../ escape", "4097 bytes total", "newline")
}

// grantingFlags are mount flags that would give more than a read-only
// request asks for, or change what is mounted.
var grantingFlags = short([]value{
	{"rw on read-only", "rw"},
	{"suid", "suid"},
	{"dev", "dev"},
	{"exec", "exec"},
	{"nosuid,rw (comma)", "nosuid,rw"},
	{"bind", "bind"},
	{"remount", "remount"},
	{"loop", "loop"},
	{"xfs logdev=/dev/...", "logdev=/dev/null"},
	{"ext4 journal_path=", "journal_path=/dev/null"},
	{"X-mount.mkdir", "X-mount.mkdir"},
	{"user", "user"},
}, "rw on read-only", "suid", "nosuid,rw (comma)", "bind", "xfs logdev=/dev/...")
