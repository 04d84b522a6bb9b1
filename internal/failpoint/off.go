//go:build !failpoints

package failpoint

// Hit marks a step; in the release build it does nothing and is inlined
// away (see off_test.go).
func Hit(string) {}

// Enabled reports whether this binary was built with failpoints.
const Enabled = false
