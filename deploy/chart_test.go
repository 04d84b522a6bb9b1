package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/volplug/volplug/internal/testutil"
)

// localDriver is the local driver's name, as the manifests and the chart's
// driverName give it.
const localDriver = "local.csi.volplug.io"

// TestChartRendered renders the chart's local driver with helm (`make deps`
// builds it into bin/tools) and checks the result as the manifests are
// checked: the node plugin's socket and mounts, and StorageClasses that
// are the manifests' own. A class's parameters reach the StorageClass.
func TestChartRendered(t *testing.T) {
	helm := testutil.HelmPath(t)
	local := slices.DeleteFunc(helmRender(t, helm, []string{"snapshots.enabled=true"}), isS3Object)
	if !slices.ContainsFunc(local, func(d doc) bool { return d.kind() == "DaemonSet" }) {
		t.Fatal("the chart renders no DaemonSet for the local driver: nothing to check")
	}
	checkSocketWiring(t, local)
	checkNodePluginMounts(t, local)
	if got, want := storageClasses(local), storageClasses(loadDocs(t, manifestDir)); got != want {
		t.Errorf("the chart's StorageClasses differ from the manifests':\n chart:     %s\n manifests: %s", got, want)
	}

	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte(`storageClasses:
  - name: volplug-native
    parameters: {layout: native, nodatacow: "false"}
  - name: volplug-native-typed
    fsType: btrfs
    parameters: {layout: native}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	got := storageClasses(slices.DeleteFunc(helmRun(t, helm, []string{"-f", values}), isS3Object))
	want := "volplug-native local.csi.volplug.io map[layout:native nodatacow:false] WaitForFirstConsumer true Delete; " +
		"volplug-native-typed local.csi.volplug.io map[csi.storage.k8s.io/fstype:btrfs layout:native] WaitForFirstConsumer true Delete"
	if got != want {
		t.Errorf("StorageClasses with parameters:\n got:  %s\n want: %s", got, want)
	}
}

// storageClasses renders the StorageClasses among docs, sorted, as one
// line each of what a claim gets from them.
func storageClasses(docs []doc) string {
	var out []string
	for _, d := range docs {
		if d.kind() != "StorageClass" || str(d.obj, "provisioner") != localDriver {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s %v %s %v %s", d.name(), str(d.obj, "provisioner"), get(d.obj, "parameters"),
			str(d.obj, "volumeBindingMode"), get(d.obj, "allowVolumeExpansion"), str(d.obj, "reclaimPolicy")))
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}
