package flexdriver

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/volplug/volplug/pkg/flex"
)

// volplug's provision extension, as `volplug adapt` calls it for
// CreateVolume and DeleteVolume: idempotent by name, a failure's code
// says what kind it is.
func TestProvisionAndDelete(t *testing.T) {
	e := rootEnv(t, false)
	if res := e.run(flex.StatusSuccess, "init"); !res.Capabilities.Provision {
		t.Fatal("init does not report provision")
	}
	opts := options("claim-1", map[string]string{flex.KeyRequiredBytes: "33554432", flex.KeyLimitBytes: "33554432"})
	a := e.run(flex.StatusSuccess, flex.CallProvision, opts)
	if a.VolumeID == "" || a.Capacity != 32<<20 || a.VolumeContext[optVolumeID] != a.VolumeID {
		t.Fatalf("provision answered %+v", a)
	}
	if b := e.run(flex.StatusSuccess, flex.CallProvision, opts); b.VolumeID != a.VolumeID {
		t.Errorf("a repeat made another volume: %s, then %s", a.VolumeID, b.VolumeID)
	}
	bigger := options("claim-1", map[string]string{flex.KeyRequiredBytes: "67108864"})
	if res := e.run(flex.StatusFailure, flex.CallProvision, bigger); res.Code != "ALREADY_EXISTS" {
		t.Errorf("same name, other size: code %q, want ALREADY_EXISTS (%s)", res.Code, res.Message)
	}
	// A volume is found by its ID as kubernetes.io/pvOrVolumeName too,
	// which is how the adapter names it.
	if res := e.run(flex.StatusSuccess, flex.CallIsAttached, options(a.VolumeID, nil), "node1"); res.Attached == nil {
		t.Errorf("isattached by ID: %+v", res)
	}
	if res := e.run(flex.StatusFailure, flex.CallAttach, options("vol-missing", map[string]string{optVolumeID: "vol-missing"}), "node1"); res.Code != "NOT_FOUND" {
		t.Errorf("attach of a missing volume: code %q, want NOT_FOUND (%s)", res.Code, res.Message)
	}
	// Every call on a volume locks it through a file in locks/; delete,
	// which locks it too, removes that file.
	lockFile := filepath.Join(e.cfg.Pool, "flex", "locks", a.VolumeID+".lock")
	for range 2 { // the second finds it gone: still a success
		e.run(flex.StatusSuccess, flex.CallDelete, a.VolumeID, options(a.VolumeID, nil))
		if _, err := os.Stat(lockFile); !os.IsNotExist(err) {
			t.Errorf("after delete the volume's lock file is there (%v)", err)
		}
	}
	e.run(flex.StatusFailure, flex.CallProvision, options("", nil))
}
