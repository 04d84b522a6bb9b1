package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// runCtl runs `volplug ctl args...` in process and returns its stdout and
// stderr.
func runCtl(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := NewCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// fields splits table output into lines of fields.
func fields(out string) [][]string {
	var rows [][]string
	for line := range strings.SplitSeq(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

// jsonDocs decodes a stream of JSON documents into messages of type T.
func jsonDocs[T proto.Message](t *testing.T, out string, newT func() T) []T {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	var docs []T
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return docs
		} else if err != nil {
			t.Fatalf("output is not a JSON stream: %v\n%s", err, out)
		}
		m := newT()
		if err := protojson.Unmarshal(raw, m); err != nil {
			t.Fatalf("JSON document is not a %T: %v\n%s", m, err, raw)
		}
		docs = append(docs, m)
	}
}

func TestIdentity(t *testing.T) {
	f, ep := startFake(t, "unix")
	out, _, err := runCtl(t, "-e", ep, "identity", "plugin-info")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"NAME", "VERSION", "MANIFEST"}, {"fake.volplug.io", "0.0.1", "a=1,b=2"}}
	if got := fields(out); !equalRows(got, want) {
		t.Errorf("plugin-info table = %q, want %q", got, want)
	}
	if _, ok := f.last(t).(*csi.GetPluginInfoRequest); !ok {
		t.Errorf("driver got %T", f.last(t))
	}

	out, _, err = runCtl(t, "-e", ep, "--no-headers", "identity", "plugin-capabilities")
	if err != nil {
		t.Fatal(err)
	}
	want = [][]string{{"service", "CONTROLLER_SERVICE"}, {"expansion", "ONLINE"}}
	if got := fields(out); !equalRows(got, want) {
		t.Errorf("plugin-capabilities = %q, want %q", got, want)
	}

	out, _, err = runCtl(t, "-e", ep, "-o", "json", "identity", "probe")
	if err != nil {
		t.Fatal(err)
	}
	docs := jsonDocs(t, out, func() *csi.ProbeResponse { return &csi.ProbeResponse{} })
	if len(docs) != 1 || !ProbeReady(docs[0]) {
		t.Errorf("probe json = %v", docs)
	}
}

func TestCreateVolume(t *testing.T) {
	f, ep := startFake(t, "unix")
	t.Setenv(SecretsEnv, "user=admin,password=hunter2")
	out, errOut, err := runCtl(t, "-e", ep, "controller", "create-volume",
		"--req-bytes", "1Gi", "--lim-bytes", "2147483648",
		"--cap", "SINGLE_NODE_WRITER,mount,ext4,noatime", "--cap", "5,block",
		"--params", "a=1,b=2", "--params", "c=3", "--source-snapshot", "snap-1", "pvc-1")
	if err != nil {
		t.Fatal(err)
	}
	// No header: the first field of the first line is the ID for scripts.
	if got := fields(out); len(got) != 1 || got[0][0] != "id-pvc-1" || got[0][1] != "1073741824" || got[0][2] != "fsType=ext4" {
		t.Errorf("create-volume output = %q", out)
	}
	if strings.Contains(out+errOut, "hunter2") {
		t.Error("a secret was printed")
	}
	want := &csi.CreateVolumeRequest{
		Name:          "pvc-1",
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30, LimitBytes: 2 << 30},
		VolumeCapabilities: []*csi.VolumeCapability{
			mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "ext4", "noatime"),
			blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER),
		},
		Parameters: map[string]string{"a": "1", "b": "2", "c": "3"},
		Secrets:    map[string]string{"user": "admin", "password": "hunter2"},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "snap-1"}}},
	}
	if got := f.last(t); !proto.Equal(got, want) {
		t.Errorf("request = %v\nwant %v", got, want)
	}

	// Several names, JSON: one document per response; default capability.
	t.Setenv(SecretsEnv, "")
	out, _, err = runCtl(t, "-e", ep, "-o", "json", "controller", "create-volume", "v1", "v2")
	if err != nil {
		t.Fatal(err)
	}
	docs := jsonDocs(t, out, func() *csi.CreateVolumeResponse { return &csi.CreateVolumeResponse{} })
	if len(docs) != 2 || docs[0].GetVolume().GetVolumeId() != "id-v1" || docs[1].GetVolume().GetVolumeId() != "id-v2" {
		t.Errorf("json docs = %v", docs)
	}
	req := f.last(t).(*csi.CreateVolumeRequest)
	if req.GetSecrets() != nil || req.GetCapacityRange() != nil || len(req.GetVolumeCapabilities()) != 1 ||
		FormatCapability(req.GetVolumeCapabilities()[0]) != defaultCap {
		t.Errorf("defaults not applied: %v", req)
	}
}

func TestErrors(t *testing.T) {
	f, ep := startFake(t, "unix")
	tests := []struct {
		name    string
		args    []string
		wantErr string
		calls   int // requests the fake recorded (unimplemented ones are not)
	}{
		{"grpc error keeps its code", []string{"-e", ep, "controller", "create-volume", "exists"}, "AlreadyExists", 1},
		{"bad cap is refused before dialing", []string{"-e", ep, "controller", "create-volume", "--cap", "1,floppy", "x"}, "neither mount nor block", 0},
		{"missing required flag", []string{"-e", ep, "node", "stage", "vol"}, "staging-target-path", 0},
		{"source volume and snapshot", []string{"-e", ep, "controller", "create-volume", "--source-volume", "a", "--source-snapshot", "b", "x"}, "exclude each other", 0},
		{"two caps where one is taken", []string{"-e", ep, "node", "stage", "--staging-target-path", "/s", "--cap", "1,block", "--cap", "1,block", "v"}, "one --cap", 0},
		{"bad output format", []string{"-e", ep, "-o", "yaml", "identity", "probe"}, "output format", 0},
		{"no endpoint", []string{"-e", "", "identity", "probe"}, "CSI_ENDPOINT", 0},
		{"socket missing", []string{"-e", "unix:///nonexistent/csi.sock", "identity", "probe"}, "no such file", 0},
		{"unimplemented call", []string{"-e", ep, "controller", "delete-snapshot", "s"}, "Unimplemented", 0},
		{"expand without size", []string{"-e", ep, "controller", "expand-volume", "v"}, "--req-bytes", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.count()
			_, _, err := runCtl(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			if got := f.count() - before; got != tt.calls {
				t.Errorf("driver recorded %d requests, want %d", got, tt.calls)
			}
		})
	}
	// The gRPC status survives the %w wrapping, for callers that check codes.
	_, _, err := runCtl(t, "-e", ep, "controller", "create-volume", "exists")
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("status code lost: %v", err)
	}
}

func TestBadSecretsNotEchoed(t *testing.T) {
	_, ep := startFake(t, "unix")
	t.Setenv(SecretsEnv, "=hunter2")
	_, _, err := runCtl(t, "-e", ep, "controller", "delete-volume", "v")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error = %v: want one that does not show the secret", err)
	}
}

func TestControllerCalls(t *testing.T) {
	f, ep := startFake(t, "unix")
	t.Setenv(SecretsEnv, "k=v")
	tests := []struct {
		name string
		args []string
		out  [][]string
		req  proto.Message
	}{
		{
			name: "publish",
			args: []string{"controller", "publish", "--node-id", "node-a", "--cap", "1,mount,ext4", "--read-only", "--vol-context", "x=y", "vol-1"},
			out:  [][]string{{"vol-1", "devicePath=/dev/loop7"}},
			req: &csi.ControllerPublishVolumeRequest{VolumeId: "vol-1", NodeId: "node-a", Readonly: true,
				VolumeCapability: mountCap(1, "ext4"), Secrets: map[string]string{"k": "v"},
				VolumeContext: map[string]string{"x": "y"}},
		},
		{
			name: "delete-volume",
			args: []string{"controller", "delete-volume", "vol-1"},
			out:  [][]string{{"vol-1"}},
			req:  &csi.DeleteVolumeRequest{VolumeId: "vol-1", Secrets: map[string]string{"k": "v"}},
		},
		{
			name: "get-capacity",
			args: []string{"controller", "get-capacity", "--cap", "1,block"},
			out:  [][]string{{"AVAILABLE", "MAX_VOLUME_SIZE", "MIN_VOLUME_SIZE"}, {"5368709120", "4294967296", "-"}},
			req:  &csi.GetCapacityRequest{VolumeCapabilities: []*csi.VolumeCapability{blockCap(1)}},
		},
		{
			name: "get-capabilities",
			args: []string{"controller", "get-capabilities"},
			out:  [][]string{{"CAPABILITY"}, {"CREATE_DELETE_VOLUME"}, {"PUBLISH_UNPUBLISH_VOLUME"}},
			req:  &csi.ControllerGetCapabilitiesRequest{},
		},
		{
			name: "create-snapshot",
			args: []string{"controller", "create-snapshot", "--source-volume", "vol-1", "s1"},
			out:  [][]string{{"snap-s1", "vol-1", "42", "-", "true"}},
			req:  &csi.CreateSnapshotRequest{Name: "s1", SourceVolumeId: "vol-1", Secrets: map[string]string{"k": "v"}},
		},
		{
			name: "expand-volume",
			args: []string{"controller", "expand-volume", "--req-bytes", "2Gi", "vol-1"},
			out:  [][]string{{"vol-1", "2147483648", "true"}},
			req: &csi.ControllerExpandVolumeRequest{VolumeId: "vol-1", Secrets: map[string]string{"k": "v"},
				CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}},
		},
		{
			name: "list-volumes, one page",
			args: []string{"controller", "list-volumes", "--max-entries", "2"},
			out: [][]string{{"ID", "CAPACITY", "CONTEXT", "PUBLISHED_NODES"},
				{"vol-0", "1073741824", "-", "node-a"}, {"vol-1", "1073741824", "-", "node-a"}},
			req: &csi.ListVolumesRequest{MaxEntries: 2},
		},
		{
			name: "list-volumes, all pages, one header",
			args: []string{"controller", "list-volumes", "--max-entries", "2", "--paging"},
			out: [][]string{{"ID", "CAPACITY", "CONTEXT", "PUBLISHED_NODES"},
				{"vol-0", "1073741824", "-", "node-a"}, {"vol-1", "1073741824", "-", "node-a"},
				{"vol-2", "1073741824", "-", "node-a"}},
			req: &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: "2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCtl(t, append([]string{"-e", ep}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if got := fields(out); !equalRows(got, tt.out) {
				t.Errorf("output = %q, want %q", got, tt.out)
			}
			if got := f.last(t); !proto.Equal(got, tt.req) {
				t.Errorf("request = %v, want %v", got, tt.req)
			}
		})
	}
	_, errOut, err := runCtl(t, "-e", ep, "controller", "list-volumes", "--max-entries", "1")
	if err != nil || !strings.Contains(errOut, "--starting-token 1") {
		t.Errorf("no next-token hint on stderr: %q, %v", errOut, err)
	}
}

func TestNodeCalls(t *testing.T) {
	f, ep := startFake(t, "tcp") // the TCP endpoint form, end to end
	t.Setenv(SecretsEnv, "k=v")
	tests := []struct {
		name string
		args []string
		out  [][]string
		req  proto.Message
	}{
		{
			name: "stage",
			args: []string{"node", "stage", "--staging-target-path", "/stage", "--cap", "SINGLE_NODE_WRITER,mount,xfs",
				"--pub-context", "devicePath=/dev/loop7", "--vol-context", "a=b", "vol-1"},
			out: [][]string{{"vol-1"}},
			req: &csi.NodeStageVolumeRequest{VolumeId: "vol-1", StagingTargetPath: "/stage",
				VolumeCapability: mountCap(1, "xfs"), PublishContext: map[string]string{"devicePath": "/dev/loop7"},
				VolumeContext: map[string]string{"a": "b"}, Secrets: map[string]string{"k": "v"}},
		},
		{
			name: "publish",
			args: []string{"node", "publish", "--staging-target-path", "/stage", "--target-path", "/pod/vol", "--read-only", "vol-1"},
			out:  [][]string{{"vol-1"}},
			req: &csi.NodePublishVolumeRequest{VolumeId: "vol-1", StagingTargetPath: "/stage", TargetPath: "/pod/vol",
				Readonly: true, VolumeCapability: mountCap(1, ""), Secrets: map[string]string{"k": "v"}},
		},
		{
			name: "unpublish",
			args: []string{"node", "unpublish", "--target-path", "/pod/vol", "vol-1"},
			out:  [][]string{{"vol-1"}},
			req:  &csi.NodeUnpublishVolumeRequest{VolumeId: "vol-1", TargetPath: "/pod/vol"},
		},
		{
			name: "get-info",
			args: []string{"node", "get-info"},
			out:  [][]string{{"NODE_ID", "MAX_VOLUMES", "TOPOLOGY"}, {"node-a", "16", "-"}},
			req:  &csi.NodeGetInfoRequest{},
		},
		{
			name: "stats, csc form",
			args: []string{"node", "stats", "vol-1:/pod/vol:/stage"},
			out: [][]string{{"ID", "PATH", "UNIT", "TOTAL", "USED", "AVAILABLE"},
				{"vol-1", "/pod/vol", "BYTES", "1000", "100", "900"}, {"vol-1", "/pod/vol", "INODES", "64", "11", "53"}},
			req: &csi.NodeGetVolumeStatsRequest{VolumeId: "vol-1", VolumePath: "/pod/vol", StagingTargetPath: "/stage"},
		},
		{
			name: "stats, path by flag",
			args: []string{"--no-headers", "node", "stats", "--volume-path", "/p", "vol-2"},
			out:  [][]string{{"vol-2", "/p", "BYTES", "1000", "100", "900"}, {"vol-2", "/p", "INODES", "64", "11", "53"}},
			req:  &csi.NodeGetVolumeStatsRequest{VolumeId: "vol-2", VolumePath: "/p"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCtl(t, append([]string{"-e", ep}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if got := fields(out); !equalRows(got, tt.out) {
				t.Errorf("output = %q, want %q", got, tt.out)
			}
			if got := f.last(t); !proto.Equal(got, tt.req) {
				t.Errorf("request = %v, want %v", got, tt.req)
			}
		})
	}

	// JSON for an empty response is still one document per call.
	out, _, err := runCtl(t, "-e", ep, "-o", "json", "node", "unpublish", "--target-path", "/t", "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	if docs := jsonDocs(t, out, func() *csi.NodeUnpublishVolumeResponse { return &csi.NodeUnpublishVolumeResponse{} }); len(docs) != 2 {
		t.Errorf("want 2 JSON documents, got %d: %q", len(docs), out)
	}
}

func TestEndpointFromEnv(t *testing.T) {
	_, ep := startFake(t, "unix")
	t.Setenv(EndpointEnv, strings.TrimPrefix(ep, "unix://")) // the bare path form
	out, _, err := runCtl(t, "identity", "probe")
	if err != nil || !strings.Contains(out, "true") {
		t.Fatalf("probe via $%s: %q, %v", EndpointEnv, out, err)
	}
}

func equalRows(a, b [][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.Join(a[i], "\x00") != strings.Join(b[i], "\x00") {
			return false
		}
	}
	return true
}
