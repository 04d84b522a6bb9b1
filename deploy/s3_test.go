package deploy

// Checks of the s3 driver's deployment: deploy/s3/ and the chart's s3-*
// templates. The s3 driver is three workloads that only work together: a
// controller Deployment (volplug --mode=controller with a leader-elected
// csi-provisioner and csi-resizer), a node DaemonSet (volplug --mode=node
// and node-driver-registrar) and a mounter DaemonSet (volplug mounter) that
// serves the FUSE mounts the node plugin asks it for over a unix socket on
// the host. Most of what can go wrong is wiring between them, which no
// single object shows; these tests follow the wires.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/volplug/volplug/internal/testutil"
)

const (
	s3Dir    = "s3"
	s3Driver = "s3.csi.volplug.io"
	// kubelet's directory in the manifests and the chart's default.
	kubeletDir = "/var/lib/kubelet"
)

// s3Check is one check of a set of s3 objects (the manifests, or the
// chart rendered by helm); secretsMade says whether the set creates the
// Secrets its StorageClasses name (false for a chart given existingSecret).
type s3Check struct {
	name string
	fn   func(t *testing.T, docs []doc, secretsMade bool)
}

var s3Checks = []s3Check{
	{"VolplugArgs", checkS3VolplugArgs},
	{"DriverName", checkS3DriverName},
	{"SocketWiring", checkS3SocketWiring},
	{"MounterShared", checkS3MounterShared},
	{"Controller", checkS3Controller},
	{"RBAC", checkS3RBAC},
	{"CSIDriver", checkS3CSIDriver},
	{"StorageClasses", checkS3StorageClasses},
}

func TestS3Manifests(t *testing.T) {
	docs := loadDocs(t, s3Dir)
	for _, c := range s3Checks {
		t.Run(c.name, func(t *testing.T) { c.fn(t, docs, true) })
	}
}

// TestS3ChartRendered renders the chart's s3 templates with helm (`make
// deps` builds it into bin/tools) and runs the same checks on the result as
// on the manifests. TestS3ChartMatchesManifests also compares the
// templates' text with the manifests, for a machine without helm.
func TestS3ChartRendered(t *testing.T) {
	helm := testutil.HelmPath(t)
	cases := []struct {
		name        string
		set         []string
		secretsMade bool
	}{
		{"credentials", []string{"s3.credentials.accessKeyID=AK", "s3.credentials.secretAccessKey=SK"}, true},
		{"existingSecret", []string{"s3.existingSecret=my-keys", "s3.endpoint=https://s3.example.com", "s3.region=us-east-1",
			"s3.storageClass.bucket=team", "s3.storageClass.prefix=k8s", "s3.storageClass.allowVolumeExpansion=false",
			"s3.controller.replicas=2"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			docs := helmTemplate(t, helm, append([]string{"s3.enabled=true"}, tc.set...))
			for _, c := range s3Checks {
				t.Run(c.name, func(t *testing.T) { c.fn(t, docs, tc.secretsMade) })
			}
		})
	}
	// Off by default, and then it renders nothing of the s3 driver.
	for _, d := range helmTemplate(t, helm, nil) {
		if strings.Contains(d.name(), "s3") || strings.Contains(d.name(), "mounter") {
			t.Errorf("s3.enabled=false renders %s %s", d.kind(), d.name())
		}
	}
	// local.enabled=false: the s3 driver alone.
	out, err := exec.Command(helm, "template", "volplug", chartDir, "--set", "local.enabled=false",
		"--set", "s3.enabled=true", "--set", "s3.existingSecret=k").Output()
	if err != nil {
		t.Fatalf("helm template with local.enabled=false: %v", err)
	}
	if bytes.Contains(out, []byte(localDriver)) {
		t.Errorf("local.enabled=false still renders the local driver:\n%s", out)
	}
	// No StorageClass without a Secret for it.
	out, err = exec.Command(helm, "template", "volplug", chartDir, "--set", "s3.enabled=true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "s3.existingSecret") {
		t.Errorf("s3.enabled=true with neither existingSecret nor credentials should fail naming s3.existingSecret: %v\n%s", err, out)
	}
}

// helmTemplate renders the chart with --set values and returns the s3
// driver's objects (TestChartRendered checks the local driver's).
func helmTemplate(t *testing.T, helm string, set []string) []doc {
	t.Helper()
	return slices.DeleteFunc(helmRender(t, helm, set), func(d doc) bool { return !isS3Object(d) })
}

// helmRender renders the chart with --set values and parses the result.
func helmRender(t *testing.T, helm string, set []string) []doc {
	t.Helper()
	var flags []string
	for _, s := range set {
		flags = append(flags, "--set", s)
	}
	return helmRun(t, helm, flags)
}

// helmRun renders the chart with these flags of helm template.
func helmRun(t *testing.T, helm string, flags []string) []doc {
	t.Helper()
	args := append([]string{"template", "volplug", chartDir, "--namespace", "volplug"}, flags...)
	var stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var docs []doc
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for i := 0; ; i++ {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template output, document %d: %v", i, err)
		}
		if obj == nil {
			continue
		}
		docs = append(docs, doc{file: "helm template " + strings.Join(flags, " "), idx: i, obj: obj})
	}
	return docs
}

// isS3Object says whether a rendered object belongs to the s3 driver.
func isS3Object(d doc) bool {
	return strings.HasPrefix(str(d.obj, "metadata", "labels", "app.kubernetes.io/name"), "volplug-") ||
		strings.Contains(d.name(), "s3") || str(d.obj, "provisioner") == s3Driver
}

// --- finding things in a set of objects ---

// isVolplug reports whether a container runs the volplug image.
func isVolplug(c map[string]any) bool { return strings.Contains(str(c, "image"), "volplug/volplug") }

// imageIs reports whether a container runs the named sidecar.
func imageIs(c map[string]any, name string) bool {
	return strings.Contains(str(c, "image"), "/"+name+":")
}

// workload is a Deployment or DaemonSet and one of its containers.
type workload struct {
	d    doc
	spec map[string]any
	c    map[string]any
}

// findVolplug returns the workloads whose volplug container runs the
// subcommand sub (and, for csi, --mode=mode).
func findVolplug(docs []doc, sub, mode string) []workload {
	var out []workload
	for _, d := range docs {
		if k := d.kind(); k != "Deployment" && k != "DaemonSet" {
			continue
		}
		spec := podSpec(d)
		for _, c := range containers(spec) {
			a := args(c)
			if !isVolplug(c) || len(a) == 0 || a[0] != sub {
				continue
			}
			if m, _ := flagValue(a, "mode"); sub == "csi" && m != mode {
				continue
			}
			out = append(out, workload{d, spec, c})
		}
	}
	return out
}

// one returns the only workload found, or fails.
func one(t *testing.T, ws []workload, what string) workload {
	t.Helper()
	if len(ws) != 1 {
		t.Fatalf("want exactly one %s, found %d", what, len(ws))
	}
	return ws[0]
}

// mountFor returns the volume mount of c under which p lies (the deepest).
func mountFor(c map[string]any, p string) map[string]any {
	var best map[string]any
	for _, m := range list(c, "volumeMounts") {
		mm, _ := m.(map[string]any)
		mp := str(mm, "mountPath")
		if mp == "" || (p != mp && !strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/")) {
			continue
		}
		if best == nil || len(mp) > len(str(best, "mountPath")) {
			best = mm
		}
	}
	return best
}

// volume returns the pod volume named name.
func volume(spec map[string]any, name string) map[string]any {
	for _, v := range list(spec, "volumes") {
		if str(v, "name") == name {
			m, _ := v.(map[string]any)
			return m
		}
	}
	return nil
}

// location names where path p of container c really is: "volume NAME/rel"
// for a pod volume, "host PATH" for a hostPath volume (comparable across
// pods), "" when p is on no volume (the container's own filesystem).
func location(spec, c map[string]any, p string) string {
	m := mountFor(c, p)
	if m == nil {
		return ""
	}
	rel := strings.TrimPrefix(p, str(m, "mountPath"))
	v := volume(spec, str(m, "name"))
	if hp := str(v, "hostPath", "path"); hp != "" {
		return "host " + path.Join(hp, rel)
	}
	return "volume " + path.Join(str(m, "name"), rel)
}

// --- the checks ---

// checkS3VolplugArgs: every volplug container's args are flags that
// `volplug csi` or `volplug mounter` has, and the CSI ones serve the s3
// backend under the CSIDriver's name.
func checkS3VolplugArgs(t *testing.T, docs []doc, _ bool) {
	found := map[string]bool{}
	for _, d := range docs {
		for _, c := range containers(podSpec(d)) {
			if !isVolplug(c) {
				continue
			}
			a := args(c)
			where := d.String() + " container " + str(c, "name")
			checkVolplugArgs(t, where, a)
			if len(a) > 0 {
				found[a[0]] = true
			}
			if len(a) > 0 && a[0] == "csi" {
				if v, _ := flagValue(a, "backend"); v != "s3" {
					t.Errorf("%s: --backend=%q, want s3", where, v)
				}
			}
		}
	}
	for _, sub := range volplugSubcommands {
		if !found[sub] {
			t.Errorf("no volplug container runs `volplug %s`", sub)
		}
	}
}

// checkS3DriverName: one CSIDriver, s3.csi.volplug.io, and everything that
// names the driver names it; the registrar tells kubelet the host path of
// the very socket the node plugin listens on.
func checkS3DriverName(t *testing.T, docs []doc, _ bool) {
	var drivers []string
	for _, d := range docs {
		if d.kind() == "CSIDriver" {
			drivers = append(drivers, d.name())
		}
	}
	if len(drivers) != 1 || drivers[0] != s3Driver {
		t.Fatalf("CSIDriver objects %q, want exactly [%s]", drivers, s3Driver)
	}
	for _, w := range slices.Concat(findVolplug(docs, "csi", "controller"), findVolplug(docs, "csi", "node")) {
		if v, _ := flagValue(args(w.c), "driver-name"); v != s3Driver {
			t.Errorf("%s: --driver-name=%q, want %s", w.d, v, s3Driver)
		}
	}
	for _, d := range docs {
		switch d.kind() {
		case "StorageClass":
			if p := str(d.obj, "provisioner"); p != s3Driver {
				t.Errorf("%s: provisioner %q, want %s", d, p, s3Driver)
			}
		case "PersistentVolume":
			if p := str(d.obj, "spec", "csi", "driver"); p != s3Driver {
				t.Errorf("%s: csi.driver %q, want %s", d, p, s3Driver)
			}
		}
	}

	node := one(t, findVolplug(docs, "csi", "node"), "s3 node plugin (volplug csi --mode=node)")
	sock, ok := strings.CutPrefix(mustFlag(t, node, "endpoint"), "unix://")
	if !ok {
		t.Fatalf("%s: --endpoint is not unix://", node.d)
	}
	want := kubeletPlugins + s3Driver + "/csi.sock"
	if got := location(node.spec, node.c, sock); got != "host "+want {
		t.Errorf("%s: the node plugin's socket %s is at %q, want host %s (where kubelet looks for %s)", node.d, sock, got, want, s3Driver)
	}
	registered := false
	for _, c := range containers(node.spec) {
		v, ok := flagValue(args(c), "kubelet-registration-path")
		if !ok {
			continue
		}
		registered = true
		if v != want {
			t.Errorf("%s: --kubelet-registration-path=%s, want %s", node.d, v, want)
		}
		if addr, _ := flagValue(args(c), "csi-address"); location(node.spec, c, addr) != "host "+v {
			t.Errorf("%s: the registrar reaches the driver at %s (%s), but registers %s", node.d, addr, location(node.spec, c, addr), v)
		}
	}
	if !registered {
		t.Errorf("%s: no container has --kubelet-registration-path (node-driver-registrar)", node.d)
	}
}

// mustFlag returns the value of --name in the workload's volplug container.
func mustFlag(t *testing.T, w workload, name string) string {
	t.Helper()
	v, ok := flagValue(args(w.c), name)
	if !ok {
		t.Fatalf("%s: container %s has no --%s", w.d, str(w.c, "name"), name)
	}
	return v
}

// checkS3SocketWiring: in the controller and node pods every sidecar
// reaches the driver's socket through the same volume.
func checkS3SocketWiring(t *testing.T, docs []doc, _ bool) {
	for _, w := range slices.Concat(findVolplug(docs, "csi", "controller"), findVolplug(docs, "csi", "node")) {
		sock, _ := strings.CutPrefix(mustFlag(t, w, "endpoint"), "unix://")
		at := location(w.spec, w.c, sock)
		if at == "" {
			t.Errorf("%s: the driver's socket %s is on no volume: no sidecar can reach it", w.d, sock)
			continue
		}
		sidecars := 0
		for _, c := range containers(w.spec) {
			if isVolplug(c) {
				continue
			}
			sidecars++
			addr, ok := flagValue(args(c), "csi-address")
			if !ok {
				t.Errorf("%s: container %s has no --csi-address", w.d, str(c, "name"))
				continue
			}
			if got := location(w.spec, c, addr); got != at {
				t.Errorf("%s: container %s reaches %s (%s), the driver listens at %s (%s)", w.d, str(c, "name"), addr, got, sock, at)
			}
		}
		if sidecars == 0 {
			t.Errorf("%s: no sidecar next to the driver", w.d)
		}
	}
}

// checkS3MounterShared: the node plugin finds the mounter. Both run on the
// same nodes, the node plugin's --mounter-socket is the host file the
// mounter's --socket serves, neither starts a mounter of its own, and both
// see kubelet's directory at its host path with Bidirectional propagation
// (the mounter's FUSE mount at the staging path must reach the node
// plugin, and the node plugin's bind mount must reach the host).
func checkS3MounterShared(t *testing.T, docs []doc, _ bool) {
	node := one(t, findVolplug(docs, "csi", "node"), "s3 node plugin (volplug csi --mode=node)")
	mnt := one(t, findVolplug(docs, "mounter", ""), "mounter (volplug mounter)")
	if node.d.kind() != "DaemonSet" || mnt.d.kind() != "DaemonSet" {
		t.Errorf("the node plugin (%s) and the mounter (%s) must be DaemonSets", node.d.kind(), mnt.d.kind())
	}

	if v := mustFlag(t, node, "start-mounter"); v != "false" {
		t.Errorf("%s: --start-mounter=%s: a mounter started in the node plugin's pod dies with it, and every mount with it", node.d, v)
	}
	nodeSock := mustFlag(t, node, "mounter-socket")
	mntSock := mustFlag(t, mnt, "socket")
	a, b := location(node.spec, node.c, nodeSock), location(mnt.spec, mnt.c, mntSock)
	if !strings.HasPrefix(a, "host ") || a != b {
		t.Errorf("the node plugin's --mounter-socket=%s is at %q, the mounter's --socket=%s at %q: want the same host file", nodeSock, a, mntSock, b)
	}
	if stateDir := mustFlag(t, mnt, "state-dir"); !strings.HasPrefix(location(mnt.spec, mnt.c, stateDir), "host ") {
		t.Errorf("%s: --state-dir=%s is not on a hostPath volume (staged writes and s3fs password files belong to the node)", mnt.d, stateDir)
	}

	for _, w := range []workload{node, mnt} {
		if get(w.c, "securityContext", "privileged") != true {
			t.Errorf("%s: container %s must be privileged (mount, /dev/fuse, propagation)", w.d, str(w.c, "name"))
		}
		m := mountFor(w.c, kubeletDir)
		if m == nil || str(m, "mountPath") != kubeletDir || str(m, "mountPropagation") != "Bidirectional" {
			t.Errorf("%s: container %s must mount %s at the same path with mountPropagation Bidirectional", w.d, str(w.c, "name"), kubeletDir)
		} else if got := location(w.spec, w.c, kubeletDir); got != "host "+kubeletDir {
			t.Errorf("%s: %s is %q, want the host's %s", w.d, kubeletDir, got, kubeletDir)
		}
		if get(w.c, "resources", "requests") == nil || get(w.c, "resources", "limits") == nil {
			t.Errorf("%s: container %s needs resource requests and limits", w.d, str(w.c, "name"))
		}
		if v, ok := flagValue(args(w.c), "node-id"); ok && v != "$(NODE_NAME)" {
			t.Errorf("%s: --node-id=%q, want $(NODE_NAME)", w.d, v)
		}
	}

	// The keeper runs in a DaemonSet of its own (replacing the mounter's
	// pod at an upgrade must leave it running: it holds the built-in
	// mounts meanwhile), on the mounter's nodes, and listens where the
	// mounter looks for it: a host file, which the node plugin does not see.
	keeper := one(t, findVolplug(docs, "keeper", ""), "keeper (volplug keeper)")
	if keeper.d.kind() != "DaemonSet" {
		t.Errorf("the keeper (%s) must be a DaemonSet", keeper.d.kind())
	}
	if keeper.d.String() == mnt.d.String() {
		t.Errorf("the keeper is a container of the mounter's pod (%s): replacing that pod ends every built-in mount", mnt.d)
	}
	if containers := containers(keeper.spec); len(containers) != 1 {
		t.Errorf("%s: %d containers, want the keeper alone", keeper.d, len(containers))
	}
	kSock := mustFlag(t, keeper, "socket")
	mkSock := mustFlag(t, mnt, "keeper-socket")
	if a, b := location(mnt.spec, mnt.c, mkSock), location(keeper.spec, keeper.c, kSock); !strings.HasPrefix(a, "host ") || a != b {
		t.Errorf("the mounter's --keeper-socket=%s is at %q, the keeper's --socket=%s at %q: want the same host file", mkSock, a, kSock, b)
	}
	if a, b := location(node.spec, node.c, mkSock), location(mnt.spec, mnt.c, mkSock); a == b {
		t.Errorf("%s: the node plugin sees the keeper's socket (%s): it is the mounter's alone", node.d, a)
	}
	if get(keeper.c, "resources", "requests") == nil || get(keeper.c, "resources", "limits") == nil {
		t.Errorf("%s: container %s needs resource requests and limits", keeper.d, str(keeper.c, "name"))
	}
	if get(keeper.c, "securityContext", "privileged") == true {
		t.Errorf("%s: the keeper needs no privilege (it receives fds, it opens nothing)", keeper.d)
	}
	// The keeper's end ends every built-in mount of its node: it changes
	// only when its pod is deleted (after a drain). The mounter's pod
	// may be replaced under running pods now (built-in mounts wait in the
	// keeper): it rolls, one node at a time, and has the time to store
	// what was written before it leaves them.
	if s := str(keeper.d.obj, "spec", "updateStrategy", "type"); s != "OnDelete" {
		t.Errorf("%s: updateStrategy %q, want OnDelete", keeper.d, s)
	}
	if s := str(mnt.d.obj, "spec", "updateStrategy", "type"); s != "RollingUpdate" {
		t.Errorf("%s: updateStrategy %q, want RollingUpdate", mnt.d, s)
	}
	if v := get(mnt.d.obj, "spec", "updateStrategy", "rollingUpdate", "maxUnavailable"); v != 1 {
		t.Errorf("%s: maxUnavailable %v, want 1", mnt.d, v)
	}
	if v, ok := get(mnt.spec, "terminationGracePeriodSeconds").(int); !ok || v < 60 {
		t.Errorf("%s: terminationGracePeriodSeconds %v, want at least 60 (it stores what was written before leaving its mounts)", mnt.d, get(mnt.spec, "terminationGracePeriodSeconds"))
	}
	for _, k := range []string{"nodeSelector", "tolerations", "affinity"} {
		if !reflect.DeepEqual(get(keeper.spec, k), get(mnt.spec, k)) {
			t.Errorf("%s of the keeper (%v) and the mounter (%v) differ: both must run on the same nodes", k, get(keeper.spec, k), get(mnt.spec, k))
		}
	}
	// A node plugin on a node without a mounter can mount nothing.
	for _, k := range []string{"nodeSelector", "tolerations", "affinity"} {
		if !reflect.DeepEqual(get(node.spec, k), get(mnt.spec, k)) {
			t.Errorf("%s of the node plugin (%v) and the mounter (%v) differ: both must run on the same nodes", k, get(node.spec, k), get(mnt.spec, k))
		}
	}
}

// checkS3Controller: one Deployment serves the cluster; its sidecars elect
// a leader (two replicas must not both create a bucket) in the namespace
// their Role covers, and the driver mounts nothing there.
func checkS3Controller(t *testing.T, docs []doc, _ bool) {
	ctl := one(t, findVolplug(docs, "csi", "controller"), "s3 controller (volplug csi --mode=controller)")
	if ctl.d.kind() != "Deployment" {
		t.Errorf("%s: the s3 controller is a %s, want a Deployment", ctl.d, ctl.d.kind())
	}
	if v := mustFlag(t, ctl, "start-mounter"); v != "false" {
		t.Errorf("%s: --start-mounter=%s: the controller mounts nothing", ctl.d, v)
	}
	for _, sidecar := range []string{"csi-provisioner", "csi-resizer"} {
		var c map[string]any
		for _, cc := range containers(ctl.spec) {
			if imageIs(cc, sidecar) {
				c = cc
			}
		}
		if c == nil {
			t.Errorf("%s: no %s", ctl.d, sidecar)
			continue
		}
		a := args(c)
		if v, ok := flagValue(a, "leader-election"); !(ok && v == "true") && !slices.Contains(a, "--leader-election") {
			t.Errorf("%s: %s runs without --leader-election", ctl.d, sidecar)
		}
		if v, ok := flagValue(a, "leader-election-namespace"); ok {
			if env, ok := strings.CutPrefix(v, "$("); ok {
				env = strings.TrimSuffix(env, ")")
				found := false
				for _, e := range list(c, "env") {
					if str(e, "name") == env && str(e, "valueFrom", "fieldRef", "fieldPath") == "metadata.namespace" {
						found = true
					}
				}
				if !found {
					t.Errorf("%s: %s --leader-election-namespace=%s, but %s is not the pod's namespace from the downward API", ctl.d, sidecar, v, env)
				}
			} else if ns := str(ctl.d.obj, "metadata", "namespace"); v != ns {
				t.Errorf("%s: %s --leader-election-namespace=%s, the Deployment is in %q", ctl.d, sidecar, v, ns)
			}
		}
	}
}

// rbacAllows reports whether the service account ns/sa may do verb on
// group/resource in namespace where, through the Roles and ClusterRoles
// bound to it in docs.
func rbacAllows(docs []doc, ns, sa, where, group, resource, verb string) bool {
	roles := map[string][]any{} // "Kind/namespace/name" -> rules
	for _, d := range docs {
		switch d.kind() {
		case "ClusterRole":
			roles["ClusterRole//"+d.name()] = list(d.obj, "rules")
		case "Role":
			roles["Role/"+str(d.obj, "metadata", "namespace")+"/"+d.name()] = list(d.obj, "rules")
		}
	}
	has := func(l []any, v string) bool {
		for _, x := range l {
			if x == v || x == "*" {
				return true
			}
		}
		return false
	}
	for _, d := range docs {
		k := d.kind()
		if k != "ClusterRoleBinding" && k != "RoleBinding" {
			continue
		}
		bindingNS := str(d.obj, "metadata", "namespace")
		if k == "RoleBinding" && bindingNS != where {
			continue
		}
		subject := false
		for _, s := range list(d.obj, "subjects") {
			if str(s, "kind") == "ServiceAccount" && str(s, "name") == sa && str(s, "namespace") == ns {
				subject = true
			}
		}
		if !subject {
			continue
		}
		ref := str(d.obj, "roleRef", "kind") + "/"
		if str(d.obj, "roleRef", "kind") == "Role" {
			ref += bindingNS
		}
		ref += "/" + str(d.obj, "roleRef", "name")
		for _, r := range roles[ref] {
			if has(list(r, "apiGroups"), group) && has(list(r, "resources"), resource) && has(list(r, "verbs"), verb) {
				return true
			}
		}
	}
	return false
}

// checkS3RBAC: what csi-provisioner and csi-resizer need, for the account
// the controller really runs as; secrets included, since every s3 call
// needs the keys the StorageClass names.
func checkS3RBAC(t *testing.T, docs []doc, _ bool) {
	ctl := one(t, findVolplug(docs, "csi", "controller"), "s3 controller (volplug csi --mode=controller)")
	ns := str(ctl.d.obj, "metadata", "namespace")
	sa := str(ctl.spec, "serviceAccountName")
	if sa == "" {
		t.Fatalf("%s: no serviceAccountName", ctl.d)
	}
	sas := false
	for _, d := range docs {
		if d.kind() == "ServiceAccount" && d.name() == sa && str(d.obj, "metadata", "namespace") == ns {
			sas = true
		}
	}
	if !sas {
		t.Errorf("ServiceAccount %s/%s is not created", ns, sa)
	}
	need := []struct{ where, group, resource, verbs string }{
		// csi-provisioner
		{"", "", "persistentvolumes", "get list watch create delete"},
		{"", "", "persistentvolumeclaims", "get list watch update"},
		{"", "storage.k8s.io", "storageclasses", "get list watch"},
		{"", "", "events", "create patch"},
		{"", "", "secrets", "get"},
		{"", "storage.k8s.io", "csinodes", "get list watch"},
		{"", "", "nodes", "get list watch"},
		// csi-resizer
		{"", "", "persistentvolumes", "patch"},
		{"", "", "persistentvolumeclaims/status", "patch"},
		{"", "", "pods", "list watch"},
		// leader election, in the controller's namespace
		{ns, "coordination.k8s.io", "leases", "get create update"},
	}
	for _, n := range need {
		for verb := range strings.FieldsSeq(n.verbs) {
			if !rbacAllows(docs, ns, sa, n.where, n.group, n.resource, verb) {
				t.Errorf("service account %s/%s may not %s %s (group %q, namespace %q)", ns, sa, verb, n.resource, n.group, n.where)
			}
		}
	}
}

// checkS3CSIDriver: no attach (any node reaches a bucket; there is no
// attacher), and fsGroup is handed to the driver (no recursive chown).
func checkS3CSIDriver(t *testing.T, docs []doc, _ bool) {
	for _, d := range docs {
		if d.kind() != "CSIDriver" {
			continue
		}
		if v := get(d.obj, "spec", "attachRequired"); v != false {
			t.Errorf("%s: attachRequired %v, want false", d, v)
		}
		if v := str(d.obj, "spec", "fsGroupPolicy"); v != "File" {
			t.Errorf("%s: fsGroupPolicy %q, want File", d, v)
		}
	}
}

// The CSI secret parameters of a StorageClass, and the RPCs they serve.
var secretParam = regexp.MustCompile(`^csi\.storage\.k8s\.io/(provisioner|node-stage|node-publish|controller-publish|controller-expand|node-expand)-secret-(name|namespace)$`)

// checkS3StorageClasses: every secret parameter comes with its other half,
// every class gives the keys to the calls that need them (provisioning and
// DeleteVolume, node staging, controller expansion if it may grow), and
// the named Secrets exist when the same set makes them.
func checkS3StorageClasses(t *testing.T, docs []doc, secretsMade bool) {
	secrets := map[string]bool{}
	for _, d := range docs {
		if d.kind() == "Secret" {
			secrets[str(d.obj, "metadata", "namespace")+"/"+d.name()] = true
		}
	}
	classes := 0
	for _, d := range docs {
		switch d.kind() {
		case "StorageClass":
			classes++
			params, _ := get(d.obj, "parameters").(map[string]any)
			refs := map[string][2]string{} // RPC -> name, namespace
			for k, v := range params {
				if strings.HasPrefix(k, "csi.storage.k8s.io/") && strings.Contains(k, "secret") {
					m := secretParam.FindStringSubmatch(k)
					if m == nil {
						t.Errorf("%s: parameter %s is not a CSI secret parameter", d, k)
						continue
					}
					s, _ := v.(string)
					r := refs[m[1]]
					if m[2] == "name" {
						r[0] = s
					} else {
						r[1] = s
					}
					refs[m[1]] = r
				}
			}
			for rpc, r := range refs {
				if r[0] == "" || r[1] == "" {
					t.Errorf("%s: %s-secret-name %q and -namespace %q: give both", d, rpc, r[0], r[1])
				} else if secretsMade && !secrets[r[1]+"/"+r[0]] {
					t.Errorf("%s: %s secret %s/%s is not created", d, rpc, r[1], r[0])
				}
			}
			need := []string{"provisioner", "node-stage"}
			if get(d.obj, "allowVolumeExpansion") == true {
				need = append(need, "controller-expand")
			}
			for _, rpc := range need {
				if _, ok := refs[rpc]; !ok {
					t.Errorf("%s: no csi.storage.k8s.io/%s-secret-*: that call gets no keys", d, rpc)
				}
			}
			if _, ok := params["prefix"]; ok && params["bucket"] == nil {
				t.Errorf("%s: prefix without bucket is ignored", d)
			}
		case "PersistentVolume":
			ref := get(d.obj, "spec", "csi", "nodeStageSecretRef")
			if ref == nil {
				t.Errorf("%s: no nodeStageSecretRef: the node gets no keys", d)
			} else if secretsMade && !secrets[str(ref, "namespace")+"/"+str(ref, "name")] {
				t.Errorf("%s: nodeStageSecretRef %s/%s is not created", d, str(ref, "namespace"), str(ref, "name"))
			}
		}
	}
	if classes == 0 {
		t.Error("no StorageClass")
	}
}

// --- the chart's s3 templates, as text (no helm needed) ---

// s3TemplateOf maps each workload manifest to its chart template.
var s3TemplateOf = map[string]string{
	"30-controller.yaml": "s3-controller.yaml",
	"40-node.yaml":       "s3-node.yaml",
	"45-keeper.yaml":     "s3-keeper.yaml",
	"50-mounter.yaml":    "s3-mounter.yaml",
}

// Flags only the chart gives, from values that the manifests leave out.
var chartOnlyFlags = map[string]bool{"s3-endpoint": true, "s3-region": true}

// TestS3ChartMatchesManifests keeps the chart's s3 templates in step with
// deploy/s3: the same containers with the same images, the same volplug
// flags (literal values equal), the driver name, the CSIDriver's fields,
// the mounter's OnDelete, the controller's secrets rule.
func TestS3ChartMatchesManifests(t *testing.T) {
	values := readYAML(t, filepath.Join(chartDir, "values.yaml"))
	if v := str(values, "s3", "driverName"); v != s3Driver {
		t.Errorf("values.yaml s3.driverName %q, want %s", v, s3Driver)
	}
	if v := get(values, "s3", "enabled"); v != false {
		t.Errorf("values.yaml s3.enabled %v, want false (opt in)", v)
	}
	volplugImage := `"{{ .Values.image.repository }}:{{ .Values.image.tag }}"`
	sidecarImage := regexp.MustCompile(`^\{\{ \.Values\.sidecars\.([A-Za-z]+)\.image \}\}$`)

	docs := loadDocs(t, s3Dir)
	for file, tplName := range s3TemplateOf {
		tplBytes, err := os.ReadFile(filepath.Join(chartDir, "templates", tplName))
		if err != nil {
			t.Fatal(err)
		}
		tpl := string(tplBytes)
		if !strings.HasPrefix(tpl, "{{- if .Values.s3.enabled }}") {
			t.Errorf("%s: not gated by s3.enabled", tplName)
		}
		var workloads []doc
		for _, d := range docs {
			if filepath.Base(d.file) == file && (d.kind() == "Deployment" || d.kind() == "DaemonSet") {
				workloads = append(workloads, d)
			}
		}
		if len(workloads) != 1 {
			t.Fatalf("deploy/s3/%s: want one workload, found %d", file, len(workloads))
		}
		d := workloads[0]
		if s := str(d.obj, "spec", "updateStrategy", "type"); s != "" &&
			!regexp.MustCompile(`(?m)^\s+type: `+s+`$`).MatchString(tpl) {
			t.Errorf("%s: no updateStrategy type %s (deploy/s3/%s has it)", tplName, s, file)
		}
		compareVolumes(t, tplName, values, podSpec(d), tpl)
		for _, c := range containers(podSpec(d)) {
			name := str(c, "name")
			where := tplName + " container " + name
			block := templateContainerBlock(tpl, name)
			if len(block) == 0 {
				t.Errorf("%s: no container %s (deploy/s3/%s has it)", tplName, name, file)
				continue
			}
			image, policy := "", ""
			for _, l := range block {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "image: "); ok && image == "" {
					image = v
				}
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "imagePullPolicy: "); ok && policy == "" {
					policy = v
				}
			}
			if policy != "IfNotPresent" && policy != "{{ .Values.image.pullPolicy }}" {
				t.Errorf("%s: imagePullPolicy %q", where, policy)
			}
			compareMounts(t, where, values, c, block)
			if isVolplug(c) {
				if image != volplugImage {
					t.Errorf("%s: image %s, want %s", where, image, volplugImage)
				}
				chartArgs := templateContainerArgs(tpl, name)
				checkVolplugArgs(t, where, chartArgs)
				compareArgs(t, where, values, args(c), chartArgs)
				continue
			}
			compareArgs(t, where, values, args(c), templateContainerArgs(tpl, name))
			m := sidecarImage.FindStringSubmatch(image)
			if m == nil {
				t.Errorf("%s: image %q, want {{ .Values.sidecars.NAME.image }}", where, image)
				continue
			}
			if v := str(values, "sidecars", m[1], "image"); v != str(c, "image") {
				t.Errorf("%s: sidecars.%s.image is %q, deploy/s3/%s has %q", where, m[1], v, file, str(c, "image"))
			}
		}
	}

	// The node plugin and the mounter run on the same nodes.
	placement := func(name string) map[string]string {
		b, err := os.ReadFile(filepath.Join(chartDir, "templates", name))
		if err != nil {
			t.Fatal(err)
		}
		return templatePlacement(string(b))
	}
	for _, other := range []string{"s3-mounter.yaml", "s3-keeper.yaml"} {
		if a, b := placement("s3-node.yaml"), placement(other); !reflect.DeepEqual(a, b) || a["tolerations"] == "" {
			t.Errorf("s3-node.yaml places its pods by %v, %s by %v: want the same, tolerations included", a, other, b)
		}
	}

	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(chartDir, "templates", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	csidriver := read("s3-csidriver.yaml")
	for _, want := range []string{"name: {{ .Values.s3.driverName }}", "attachRequired: false", "fsGroupPolicy: File"} {
		if !strings.Contains(csidriver, want) {
			t.Errorf("s3-csidriver.yaml: no %q", want)
		}
	}
	rbac := read("s3-rbac.yaml")
	if !regexp.MustCompile(`resources: \["secrets"\]\s+verbs: \["get"\]`).MatchString(rbac) {
		t.Error("s3-rbac.yaml: the controller may not get secrets")
	}
	if !regexp.MustCompile(`resources: \["leases"\]\s+verbs: \[[^]]*"create"`).MatchString(rbac) {
		t.Error("s3-rbac.yaml: no leases rule for leader election")
	}
	sc := read("s3-storageclass.yaml")
	for _, want := range []string{"provisioner: {{ .Values.s3.driverName }}",
		"csi.storage.k8s.io/provisioner-secret-name:", "csi.storage.k8s.io/provisioner-secret-namespace:",
		"csi.storage.k8s.io/node-stage-secret-name:", "csi.storage.k8s.io/node-stage-secret-namespace:",
		"csi.storage.k8s.io/controller-expand-secret-name:", "csi.storage.k8s.io/controller-expand-secret-namespace:"} {
		if !strings.Contains(sc, want) {
			t.Errorf("s3-storageclass.yaml: no %q", want)
		}
	}
}

// TestChartDriversGated: every template of an object is for one driver
// and rendered only when that driver is enabled (local.enabled,
// s3.enabled), so either can be installed alone.
func TestChartDriversGated(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(chartDir, "templates", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no templates: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		driver := "local"
		if strings.HasPrefix(filepath.Base(f), "s3-") {
			driver = "s3"
		}
		gate := regexp.MustCompile(`^\{\{- if (and )?\.Values\.` + driver + `\.enabled[ }]`)
		if !gate.Match(b) || !strings.HasSuffix(string(b), "{{- end }}\n") {
			t.Errorf("%s: does not start with {{- if .Values.%s.enabled ... }} and end with {{- end }}", f, driver)
		}
	}
}

// compareArgs: the chart gives every flag the manifest gives, with the
// same value once rendered with the default values, and no others but
// chartOnlyFlags. Args start with volplug's subcommand, or are all flags
// (a sidecar's).
func compareArgs(t *testing.T, where string, values map[string]any, manifest, chart []string) {
	t.Helper()
	split := func(a []string) (string, map[string]string) {
		sub := ""
		if len(a) > 0 && !strings.HasPrefix(a[0], "--") {
			sub, a = a[0], a[1:]
		}
		m := map[string]string{}
		for _, arg := range a {
			k, v, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
			m[k] = v
		}
		return sub, m
	}
	ms, mf := split(manifest)
	cs, cf := split(chart)
	if ms != cs {
		t.Errorf("%s: subcommand %q, the manifest's is %q", where, cs, ms)
	}
	for k, v := range mf {
		cv, ok := cf[k]
		if !ok {
			t.Errorf("%s: no --%s (the manifest has --%s=%s)", where, k, k, v)
			continue
		}
		if r, err := resolve(values, cv); err != nil {
			t.Errorf("%s: --%s=%s: %v", where, k, cv, err)
		} else if r != v {
			t.Errorf("%s: --%s=%s renders as %q, the manifest has --%s=%s", where, k, cv, r, k, v)
		}
	}
	for k := range cf {
		if _, ok := mf[k]; !ok && !chartOnlyFlags[k] {
			t.Errorf("%s: --%s is not in the manifest", where, k)
		}
	}
}

// templateExpr is one {{ ... }} of a template.
var templateExpr = regexp.MustCompile(`\{\{-? *([^}]*?) *-?\}\}`)

// resolve renders the few expressions the s3 templates use in paths with
// the chart's default values: .Values.x.y, $kubeletDir and the socket
// directory helper. Anything else is an error, so that a new kind of
// expression is added here rather than silently compared as text.
func resolve(values map[string]any, s string) (string, error) {
	var err error
	out := templateExpr.ReplaceAllStringFunc(s, func(e string) string {
		expr := templateExpr.FindStringSubmatch(e)[1]
		switch {
		case expr == "$kubeletDir":
			return str(values, "kubeletDir")
		case expr == `include "volplug.s3.socketDir" .`:
			return str(values, "kubeletDir") + "/plugins/" + str(values, "s3", "driverName")
		case strings.HasPrefix(expr, ".Values."):
			v := get(values, strings.Split(strings.TrimPrefix(expr, ".Values."), ".")...)
			if v == nil {
				err = errors.New(expr + " is not in values.yaml")
			}
			return fmt.Sprint(v)
		}
		err = errors.New("cannot resolve {{ " + expr + " }} (extend resolve in s3_test.go)")
		return e
	})
	return out, err
}

var (
	volumesLine = regexp.MustCompile(`^\s*volumes:\s*$`)
	itemName    = regexp.MustCompile(`^\s*- name: (\S+)\s*$`)
	fieldLine   = regexp.MustCompile(`^\s*(path|mountPath|mountPropagation): (.+?)\s*$`)
)

// templateFields reads "- name: X" items and their path, mountPath and
// mountPropagation lines: name -> field -> value.
func templateFields(lines []string) map[string]map[string]string {
	out := map[string]map[string]string{}
	cur := ""
	for _, l := range lines {
		if m := itemName.FindStringSubmatch(l); m != nil {
			cur = m[1]
			continue
		}
		if m := fieldLine.FindStringSubmatch(l); m != nil && cur != "" {
			if out[cur] == nil {
				out[cur] = map[string]string{}
			}
			out[cur][m[1]] = m[2]
		}
	}
	return out
}

// compareVolumes: every hostPath volume of the manifest is in the
// template's volumes with the same host path (with default values).
func compareVolumes(t *testing.T, tplName string, values, spec map[string]any, tpl string) {
	t.Helper()
	lines := strings.Split(tpl, "\n")
	start := slices.IndexFunc(lines, volumesLine.MatchString)
	if start < 0 {
		t.Errorf("%s: no volumes:", tplName)
		return
	}
	got := templateFields(lines[start:])
	for _, v := range list(spec, "volumes") {
		name, want := str(v, "name"), str(v, "hostPath", "path")
		if want == "" {
			continue
		}
		p, err := resolve(values, got[name]["path"])
		if err != nil {
			t.Errorf("%s: volume %s: %v", tplName, name, err)
		} else if p != want {
			t.Errorf("%s: volume %s is host path %q, the manifest's is %q", tplName, name, p, want)
		}
	}
}

// compareMounts: the container mounts what the manifest's container
// mounts, at the same paths, with the same propagation.
func compareMounts(t *testing.T, where string, values, c map[string]any, block []string) {
	t.Helper()
	got := templateFields(block)
	for _, m := range list(c, "volumeMounts") {
		name := str(m, "name")
		g, ok := got[name]
		if !ok || g["mountPath"] == "" {
			t.Errorf("%s: does not mount volume %s", where, name)
			continue
		}
		p, err := resolve(values, g["mountPath"])
		if err != nil {
			t.Errorf("%s: mount %s: %v", where, name, err)
		} else if p != str(m, "mountPath") {
			t.Errorf("%s: mounts %s at %q, the manifest at %q", where, name, p, str(m, "mountPath"))
		}
		if g["mountPropagation"] != str(m, "mountPropagation") {
			t.Errorf("%s: mount %s has mountPropagation %q, the manifest %q", where, name, g["mountPropagation"], str(m, "mountPropagation"))
		}
	}
}

var placementLine = regexp.MustCompile(`^\s*(nodeSelector|tolerations|affinity):\s*(.*)$`)

// templatePlacement returns what decides a template's pods' nodes: for
// nodeSelector, tolerations and affinity, the line that sets each (or the
// "with" line guarding it).
func templatePlacement(tpl string) map[string]string {
	out := map[string]string{}
	lines := strings.Split(tpl, "\n")
	for i, l := range lines {
		m := placementLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		v := strings.TrimSpace(m[2])
		if v == "" && i > 0 {
			v = strings.TrimSpace(lines[i-1])
		}
		out[m[1]] = v
	}
	return out
}
