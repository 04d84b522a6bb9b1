package bucketfs

import (
	"fmt"
	"strings"
	"testing"
)

func TestValidateBucket(t *testing.T) {
	for name, ok := range map[string]bool{
		"vol-bucket": true, "a.b.c": true, "abc": true,
		"ab": false, "Upper": false, "a..b": false, "-ab": false, "ab-": false,
		"192.168.1.1": false, "a_b": false, strings.Repeat("a", 64): false, "a/b": false,
	} {
		if err := ValidateBucket(name); (err == nil) != ok {
			t.Errorf("ValidateBucket(%q) = %v", name, err)
		}
	}
}

func TestNormalizePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "/": "", "a": "a/", "/a/b/": "a/b/", "a/b": "a/b/",
		"a//b": "!", "a/../b": "!", "./a": "!", "a\nb": "!",
	} {
		got, err := NormalizePrefix(in)
		if err != nil {
			got = "!"
		}
		if got != want {
			t.Errorf("NormalizePrefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzNormalizePrefix(f *testing.F) {
	for _, s := range []string{"", "a/b", "a//b", "../x", "a/./b", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := NormalizePrefix(in)
		if err != nil || p == "" {
			return
		}
		if !strings.HasSuffix(p, "/") || strings.HasPrefix(p, "/") {
			t.Fatalf("%q -> %q", in, p)
		}
		for _, seg := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("%q -> %q has segment %q", in, p, seg)
			}
		}
	})
}

func TestConfigHidesKeys(t *testing.T) {
	c := Config{Endpoint: "http://x", AccessKey: "AKIDSECRETISH", SecretKey: "verysecret", Bucket: "bkt"}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		if strings.Contains(s, "verysecret") || strings.Contains(s, "AKIDSECRETISH") {
			t.Errorf("config printed with a key: %s", s)
		}
	}
	if _, err := (Config{Endpoint: "ftp://x", AccessKey: "a", SecretKey: "verysecret", Bucket: "bkt"}).withDefaults(); err == nil || strings.Contains(err.Error(), "verysecret") {
		t.Errorf("bad endpoint: %v", err)
	}
}

func TestPartSizeFollowsCapacity(t *testing.T) {
	for _, c := range []struct {
		capacity, part int64
		slots          int
	}{
		{0, 8 << 20, 8},          // no quota: the smallest default part
		{10 << 30, 8 << 20, 8},   // 10 GiB: 8 MiB parts reach 80 GiB
		{200 << 30, 21 << 20, 6}, // 200 GiB / 10,000 = 20.5 MiB, rounded up
		{10 << 40, 64 << 20, 2},  // 10 TiB: the largest default part
	} {
		cfg, err := Config{Endpoint: "http://x", AccessKey: "a", SecretKey: "s", Bucket: "bkt", CapacityBytes: c.capacity}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.PartSize != c.part || cfg.UploadConcurrency != c.slots {
			t.Errorf("capacity %d: part %d, %d slots; want %d, %d", c.capacity, cfg.PartSize, cfg.UploadConcurrency, c.part, c.slots)
		}
		if c.capacity > 0 && c.capacity <= 640<<30 && cfg.PartSize*maxParts < c.capacity {
			t.Errorf("capacity %d: %d parts of %d do not fill it", c.capacity, maxParts, cfg.PartSize)
		}
	}
}

// FuzzValidateBucket: an accepted bucket name is one DNS-style name: no
// slash, no "..", 3 to 63 bytes.
func FuzzValidateBucket(f *testing.F) {
	for _, s := range []string{"bucket", "a..b", "../x", "1.2.3.4", "ab", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b string) {
		if ValidateBucket(b) != nil {
			return
		}
		if len(b) < 3 || len(b) > 63 || strings.ContainsAny(b, "/\x00,") || strings.Contains(b, "..") {
			t.Fatalf("bucket %q accepted", b)
		}
	})
}
