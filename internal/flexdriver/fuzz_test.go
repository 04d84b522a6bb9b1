package flexdriver

import (
	"math"
	"strconv"
	"testing"
)

// FuzzParseSize: a size option is refused or a byte count in [0,
// MaxInt64); the decimal form of a count parses back to itself.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1Gi", "500M", "1073741824", "-1", "1e19", "1e400", "Gi", "9Ei", "0.5", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			return
		}
		if n < 0 || n == math.MaxInt64 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
		if back, err := parseSize(strconv.FormatInt(n, 10)); err != nil || back != n {
			t.Fatalf("parseSize(%q) = %d, which reads back as %d, %v", s, n, back, err)
		}
	})
}

// FuzzLockKey: an accepted lock key is one file name in locks/.
func FuzzLockKey(f *testing.F) {
	for _, s := range []string{"pool", "vol-1", "../../x", "..", "a/b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if !lockKey.MatchString(key) {
			return
		}
		if key == "." || key == ".." || len(key) > 128 {
			t.Fatalf("lock key %q accepted", key)
		}
		for _, c := range key {
			if c == '/' || c == 0 {
				t.Fatalf("lock key %q accepted", key)
			}
		}
	})
}
