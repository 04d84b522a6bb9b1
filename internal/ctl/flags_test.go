package ctl

import (
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/proto"
)

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, fs string, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs, MountFlags: flags}},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
	}
}

func TestParseCapability(t *testing.T) {
	const (
		snw = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		mnm = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
		sro = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	)
	tests := []struct {
		in      string
		want    *csi.VolumeCapability
		wantErr string
	}{
		{in: "SINGLE_NODE_WRITER,mount,ext4", want: mountCap(snw, "ext4")},
		{in: "SINGLE_NODE_WRITER,mount", want: mountCap(snw, "")},
		{in: "1,2,xfs", want: mountCap(snw, "xfs")},
		{in: "5,1", want: blockCap(mnm)},
		{in: "MULTI_NODE_MULTI_WRITER,block", want: blockCap(mnm)},
		{in: "single-node-reader-only,MOUNT,ext4,ro", want: mountCap(sro, "ext4", "ro")},
		{in: "MULTI_NODE_MULTI_WRITER,mount,xfs,uid=500,gid=500", want: mountCap(mnm, "xfs", "uid=500", "gid=500")},
		{in: "1,mount,ext4,,noatime,", want: mountCap(snw, "ext4", "noatime")},
		{in: "1,mount,,noatime", want: mountCap(snw, "", "noatime")},
		{in: "", wantErr: "want MODE,TYPE"},
		{in: "SINGLE_NODE_WRITER", wantErr: "want MODE,TYPE"},
		{in: "WRITER,mount", wantErr: "unknown access mode"},
		{in: "UNKNOWN,mount", wantErr: "unknown access mode"},
		{in: "0,mount", wantErr: "unknown access mode number 0"},
		{in: "99,mount", wantErr: "unknown access mode number 99"},
		{in: "1,file", wantErr: "neither mount nor block"},
		{in: "1,block,ext4", wantErr: "block volume takes no filesystem"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCapability(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCapability(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCapability(%q): %v", tt.in, err)
			}
			if !proto.Equal(got, tt.want) {
				t.Fatalf("ParseCapability(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatCapability(t *testing.T) {
	tests := []struct {
		c    *csi.VolumeCapability
		want string
	}{
		{mountCap(1, "ext4"), "SINGLE_NODE_WRITER,mount,ext4"},
		{mountCap(1, ""), "SINGLE_NODE_WRITER,mount"},
		{mountCap(5, "xfs", "a", "b=c"), "MULTI_NODE_MULTI_WRITER,mount,xfs,a,b=c"},
		{mountCap(1, "", "ro"), "SINGLE_NODE_WRITER,mount,,ro"},
		{blockCap(7), "SINGLE_NODE_MULTI_WRITER,block"},
	}
	for _, tt := range tests {
		if got := FormatCapability(tt.c); got != tt.want {
			t.Errorf("FormatCapability(%v) = %q, want %q", tt.c, got, tt.want)
		}
	}
}

// FuzzParseCapability checks the parser never panics and that whatever it
// accepts survives a format and a second parse unchanged.
func FuzzParseCapability(f *testing.F) {
	for _, s := range []string{
		"SINGLE_NODE_WRITER,mount,ext4", "5,1", "1,mount,xfs,uid=1,gid=2", "1,mount,,ro",
		"single-node-writer,block", ",", "1,mount,ext4,,", "7,2, ext4 , a ,b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCapability(s)
		if err != nil {
			return
		}
		if c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
			t.Fatalf("%q parsed to an UNKNOWN access mode", s)
		}
		if (c.GetMount() == nil) == (c.GetBlock() == nil) {
			t.Fatalf("%q parsed to %v: want exactly one access type", s, c)
		}
		for _, fl := range c.GetMount().GetMountFlags() {
			if fl == "" {
				t.Fatalf("%q produced an empty mount flag", s)
			}
		}
		again, err := ParseCapability(FormatCapability(c))
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", s, FormatCapability(c), err)
		}
		// Whitespace is trimmed from the fs type and flags on the way in,
		// so the round trip is exact only from the first parse on.
		if !proto.Equal(c, again) {
			t.Fatalf("%q -> %v -> %q -> %v", s, c, FormatCapability(c), again)
		}
	})
}

func TestParseKV(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{"a=1", map[string]string{"a": "1"}, false},
		{"a=1,b=2", map[string]string{"a": "1", "b": "2"}, false},
		{"a=x=y", map[string]string{"a": "x=y"}, false},
		{"flag", map[string]string{"flag": ""}, false},
		{"a=1,,b=", map[string]string{"a": "1", "b": ""}, false},
		{"a=1,a=2", map[string]string{"a": "2"}, false},
		{"", map[string]string{}, false},
		{"=v", nil, true},
	}
	for _, tt := range tests {
		m := map[string]string{}
		err := ParseKV(tt.in, m)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseKV(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && FormatKV(m) != FormatKV(tt.want) {
			t.Errorf("ParseKV(%q) = %v, want %v", tt.in, m, tt.want)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in, network, addr string
		wantErr           bool
	}{
		{in: "unix:///run/csi.sock", network: "unix", addr: "/run/csi.sock"},
		{in: "unix://csi.sock", network: "unix", addr: "csi.sock"},
		{in: "unix:csi.sock", network: "unix", addr: "csi.sock"},
		{in: "/run/csi.sock", network: "unix", addr: "/run/csi.sock"},
		{in: "./csi.sock", network: "unix", addr: "./csi.sock"},
		{in: "csi.sock", network: "unix", addr: "csi.sock"},
		{in: "tcp://127.0.0.1:10000", network: "tcp", addr: "127.0.0.1:10000"},
		{in: "127.0.0.1:10000", network: "tcp", addr: "127.0.0.1:10000"},
		{in: "localhost:10000", network: "tcp", addr: "localhost:10000"},
		{in: "[::1]:10000", network: "tcp", addr: "[::1]:10000"},
		{in: "", wantErr: true},
		{in: "unix://", wantErr: true},
		{in: "tcp://nohost", wantErr: true},
		{in: "tcp://h:notaport", wantErr: true},
		{in: "http://x:1", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseEndpoint(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseEndpoint(%q) = %v, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got.Network != tt.network || got.Address != tt.addr {
			t.Errorf("ParseEndpoint(%q) = %v, %v; want %s %s", tt.in, got, err, tt.network, tt.addr)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"1073741824", 1 << 30, false},
		{"1Gi", 1 << 30, false},
		{"1GiB", 1 << 30, false},
		{"512Mi", 512 << 20, false},
		{"10G", 10e9, false},
		{"4k", 4000, false},
		{"100B", 100, false},
		{"-1", 0, true},
		{"1.5Gi", 0, true},
		{"Gi", 0, true},
		{"99999999999Ti", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1.0Ki", 1 << 30: "1.0Gi", 1536 << 20: "1.5Gi"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
