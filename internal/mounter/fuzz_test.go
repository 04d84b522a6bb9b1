package mounter

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzRequest: whatever JSON reaches the mounter's socket, an accepted
// request has a clean absolute target, a valid bucket, a prefix without
// "..", and nothing that could add options to a mount's option list.
func FuzzRequest(f *testing.F) {
	f.Add(`{"target":"/mnt/x","kind":"builtin","fs":{"Bucket":"bkt","AccessKey":"a","SecretKey":"s"}}`)
	f.Add(`{"target":"/mnt/x","kind":"s3fs","fs":{"Bucket":"bkt","Prefix":"a,suid","AccessKey":"a","SecretKey":"s"}}`)
	f.Add(`{"target":"../x","kind":"rclone","fs":{"Bucket":"bkt","Endpoint":"http://x,dev","AccessKey":"a","SecretKey":"s"}}`)
	f.Fuzz(func(t *testing.T, body string) {
		var req Request
		if json.Unmarshal([]byte(body), &req) != nil || req.validate() != nil {
			return
		}
		if !filepath.IsAbs(req.Target) || filepath.Clean(req.Target) != req.Target {
			t.Fatalf("target %q accepted", req.Target)
		}
		for _, v := range []string{req.FS.FsName, req.FS.Endpoint, req.FS.Region} {
			if strings.ContainsAny(v, ",\"'\n\x00") {
				t.Fatalf("%q accepted in a mount option", v)
			}
		}
		for _, seg := range strings.Split(req.FS.Prefix, "/") {
			if seg == ".." {
				t.Fatalf("prefix %q accepted", req.FS.Prefix)
			}
		}
	})
}
