package adapt

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/volplug/volplug/pkg/flex"
)

// FuzzCheckID: an accepted volume ID has no ".." name, is not absolute,
// and holds no whitespace, control or shell character.
func FuzzCheckID(f *testing.F) {
	for _, s := range []string{"pv-1", "bucket/prefix", "../x", "/etc", "a;b", "$(id)", "a\nb", "a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if checkID(id) != nil {
			return
		}
		if strings.HasPrefix(id, "/") || strings.ContainsAny(id, " \t\n\x00;$`&|<>(){}[]*?!\\\"'") {
			t.Fatalf("ID %q accepted", id)
		}
		for _, name := range strings.Split(id, "/") {
			if name == ".." || name == "" {
				t.Fatalf("ID %q accepted", id)
			}
		}
	})
}

// FuzzDriverOptions: the JSON handed to a driver always parses as the
// protocol says, with the volume ID, the access and every secret intact.
func FuzzDriverOptions(f *testing.F) {
	f.Add("pv-1", "k", "v", "secret", "s3cr3t", true)
	f.Add("x", "kubernetes.io/readwrite", "rw", "a", "", false)
	f.Fuzz(func(t *testing.T, id, k, v, sk, sv string, ro bool) {
		for _, s := range []string{id, k, v, sk, sv} {
			if !utf8.ValidString(s) {
				return // gRPC delivers valid UTF-8 only
			}
		}
		o := driverOptions{volumeID: id, attrs: map[string]string{k: v}, readOnly: ro, secrets: map[string]string{sk: sv}}
		got, err := flex.ParseOptions([]byte(o.json()))
		if err != nil {
			// only what JSON cannot carry as text (invalid UTF-8), or a
			// context key that overrides kubernetes.io/readwrite badly
			return
		}
		if s, ok := got.Secrets.Get(sk); !ok || s != sv {
			t.Fatalf("secret %q lost: %q", sk, s)
		}
		if k != flex.KeyPVOrVolumeName && got.VolumeName != id {
			t.Fatalf("volume %q became %q", id, got.VolumeName)
		}
	})
}
