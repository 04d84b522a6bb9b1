package adapt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/csirpc"
	"github.com/volplug/volplug/pkg/flex"
)

func TestDriverOptions(t *testing.T) {
	o := driverOptions{
		volumeID: "pv-1",
		attrs: map[string]string{"server": "nfs1", "csi.storage.k8s.io/pod.uid": "u1",
			"csi.storage.k8s.io/serviceAccount.name": "sa", "csi.storage.k8s.io/pvc/name": "claim",
			flex.KeyFsType: "xfs"}, // a user key overrides kubelet's, as in a flex PV
		capa:     csirpc.Capability{FsType: "ext4", MountGroup: "2000"},
		readOnly: true,
		secrets:  map[string]string{"key": "v"},
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(o.json()), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		flex.KeyPVOrVolumeName: "pv-1", flex.KeyReadWrite: "ro", flex.KeyFsType: "xfs",
		"server": "nfs1", flex.KeyPodUID: "u1", flex.KeyServiceAccount: "sa",
		flex.KeyFsGroup: "2000", flex.SecretPrefix + "key": "dg==",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("options\n got %v\nwant %v", got, want)
	}
	// What the driver receives parses as kubelet's JSON.
	if _, err := flex.ParseOptions([]byte(o.json())); err != nil {
		t.Error(err)
	}
}

func TestToStatus(t *testing.T) {
	failure := fmt.Errorf("drv attach: %w: no", flex.ErrFailure)
	for _, c := range []struct {
		res  *flex.Result
		err  error
		want codes.Code
	}{
		{nil, fmt.Errorf("drv mount: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{nil, fmt.Errorf("drv mount: %w", context.Canceled), codes.Canceled},
		{&flex.Result{Status: flex.StatusFailure}, failure, codes.Internal},
		{&flex.Result{Status: flex.StatusFailure, Code: "NOT_FOUND"}, failure, codes.NotFound},
		{&flex.Result{Status: flex.StatusFailure, Code: "OK"}, failure, codes.Internal},
		{&flex.Result{Status: flex.StatusFailure, Code: "bogus"}, failure, codes.Internal},
		{nil, fmt.Errorf("drv: %w", flex.ErrBadOutput), codes.Internal},
		{&flex.Result{Status: flex.StatusSuccess}, errors.New("answered Success but exit status 1"), codes.Internal},
		{nil, status.Error(codes.FailedPrecondition, "no device"), codes.FailedPrecondition},
	} {
		if got := status.Code(toStatus(c.res, c.err)); got != c.want {
			t.Errorf("toStatus(%+v, %v) = %s, want %s", c.res, c.err, got, c.want)
		}
	}
}

func TestCodeNames(t *testing.T) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		got, ok := csirpc.ParseCode(csirpc.CodeName(c))
		if !ok || got != c {
			t.Errorf("code %s does not round-trip: %q", c, csirpc.CodeName(c))
		}
	}
}
