package s3

import (
	"strings"
	"testing"

	"github.com/volplug/volplug/internal/bucketfs"
)

// FuzzParseID: an accepted ID is canonical (it round-trips), its prefix
// has no empty, "." or ".." segment, and nothing in it can break out of a
// mount's option list.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{"bucket", "bucket/a/b", "bucket/../x", "b/a,suid", "Bucket", "bucket//a", "bucket/a/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		bucket, prefix, err := parseID(id)
		if err != nil {
			return
		}
		if volumeID(bucket, prefix) != id {
			t.Fatalf("%q -> %q %q does not round-trip", id, bucket, prefix)
		}
		if bucketfs.ValidateBucket(bucket) != nil || strings.ContainsAny(prefix, mountSpecial) {
			t.Fatalf("%q accepted with bucket %q prefix %q", id, bucket, prefix)
		}
		for _, seg := range strings.Split(strings.TrimSuffix(prefix, "/"), "/") {
			if prefix != "" && (seg == "" || seg == "." || seg == "..") {
				t.Fatalf("%q: prefix segment %q", id, seg)
			}
		}
	})
}

// FuzzCheckParams: StorageClass parameters never panic the check, and
// accepted ones give ownership without setuid, setgid or sticky bits.
func FuzzCheckParams(f *testing.F) {
	f.Add("fileMode", "4777")
	f.Add("uid", "-1")
	f.Add("mounter", "s3fs")
	f.Add("prefix", "../x")
	f.Add("endpoint", "http://x,passwd_file=/etc/shadow")
	f.Fuzz(func(t *testing.T, k, v string) {
		params := map[string]string{k: v}
		if checkParams(params) != nil {
			return
		}
		var fs bucketfs.Config
		if err := ownership(&fs, params, ""); err != nil {
			return
		}
		if fs.FileMode&^0o777 != 0 || fs.DirMode&^0o777 != 0 {
			t.Fatalf("%s=%q gives modes %o %o", k, v, fs.FileMode, fs.DirMode)
		}
		if (k == paramEndpoint || k == paramRegion || k == paramPrefix) && strings.ContainsAny(v, mountSpecial) {
			t.Fatalf("%s=%q accepted", k, v)
		}
	})
}
