// Package deploy holds no code: only the Kubernetes manifests and this test,
// which checks that they agree with each other, with the Helm chart, and
// with the flags the volplug binary really has. It needs no cluster and no
// root; it builds the binary once to read `volplug csi --help` and
// `volplug mounter --help`. The s3 driver's checks are in s3_test.go.
package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
)

const (
	manifestDir = "kubernetes"
	chartDir    = "../charts/volplug"
	// The volplug container's name, in the DaemonSet and the chart.
	driverContainer = "volplug"
	// Where kubelet looks for plugin sockets (the DaemonSet's default
	// kubelet directory).
	kubeletPlugins = "/var/lib/kubelet/plugins/"
)

// doc is one YAML document of a manifest file.
type doc struct {
	file string
	idx  int
	obj  map[string]any
}

func (d doc) String() string { return d.file + "#" + strconv.Itoa(d.idx) }

func (d doc) kind() string { return str(d.obj, "kind") }
func (d doc) name() string { return str(d.obj, "metadata", "name") }

// isPatch reports whether the file is a strategic-merge patch fragment
// (applied with kubectl patch, never kubectl apply).
func isPatch(file string) bool { return strings.HasSuffix(file, ".patch.yaml") }

// loadDocs parses every YAML document under dir.
func loadDocs(t *testing.T, dir string) []doc {
	t.Helper()
	var docs []doc
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var obj map[string]any
			err := dec.Decode(&obj)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("%s: document %d: %v", p, i, err)
				break
			}
			if obj == nil { // an empty document (comments only)
				continue
			}
			docs = append(docs, doc{file: p, idx: i, obj: obj})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatalf("no YAML documents under %s", dir)
	}
	return docs
}

// get walks nested maps; it returns nil when a key is missing.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any, keys ...string) string {
	s, _ := get(v, keys...).(string)
	return s
}

func list(v any, keys ...string) []any {
	l, _ := get(v, keys...).([]any)
	return l
}

// podSpec returns the pod template spec of a workload, the spec of a Pod,
// or nil.
func podSpec(d doc) map[string]any {
	if d.kind() == "Pod" {
		m, _ := get(d.obj, "spec").(map[string]any)
		return m
	}
	m, _ := get(d.obj, "spec", "template", "spec").(map[string]any)
	return m
}

func containers(spec map[string]any) []map[string]any {
	var out []map[string]any
	for _, c := range list(spec, "containers") {
		if m, ok := c.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func args(c map[string]any) []string {
	var out []string
	for _, a := range list(c, "args") {
		s, _ := a.(string)
		out = append(out, s)
	}
	return out
}

// flagValue returns the value of --name=value in args, and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestEveryDocumentIsAnObject(t *testing.T) {
	for _, d := range slices.Concat(loadDocs(t, manifestDir), loadDocs(t, s3Dir)) {
		if isPatch(d.file) {
			// A patch must NOT be a whole object: without a kind, kubectl
			// apply refuses it instead of replacing the DaemonSet with it.
			if d.kind() != "" || str(d.obj, "apiVersion") != "" {
				t.Errorf("%s: a .patch.yaml must have no apiVersion/kind (it is for kubectl patch only)", d)
			}
			if len(containers(podSpec(d))) == 0 {
				t.Errorf("%s: patch adds no container under spec.template.spec.containers", d)
			}
			continue
		}
		for _, k := range [][]string{{"apiVersion"}, {"kind"}, {"metadata", "name"}} {
			if str(d.obj, k...) == "" {
				t.Errorf("%s: %s is missing", d, strings.Join(k, "."))
			}
		}
	}
}

// TestDriverNameAgrees checks the one name that ties everything together.
func TestDriverNameAgrees(t *testing.T) {
	docs := loadDocs(t, manifestDir)
	var driver string
	for _, d := range docs {
		if d.kind() == "CSIDriver" {
			if driver != "" {
				t.Fatalf("%s: a second CSIDriver", d)
			}
			driver = d.name()
		}
	}
	if driver == "" {
		t.Fatal("no CSIDriver object")
	}
	socketDir := kubeletPlugins + driver
	seen := map[string]bool{}
	for _, d := range docs {
		switch d.kind() {
		case "StorageClass":
			seen["StorageClass"] = true
			if p := str(d.obj, "provisioner"); p != driver {
				t.Errorf("%s: provisioner %q, CSIDriver is %q", d, p, driver)
			}
		case "VolumeSnapshotClass":
			seen["VolumeSnapshotClass"] = true
			if p := str(d.obj, "driver"); p != driver {
				t.Errorf("%s: driver %q, CSIDriver is %q", d, p, driver)
			}
		case "DaemonSet":
			seen["DaemonSet"] = true
			spec := podSpec(d)
			for _, v := range list(spec, "volumes") {
				if str(v, "name") == "socket-dir" {
					seen["socket-dir"] = true
					if p := str(v, "hostPath", "path"); p != socketDir {
						t.Errorf("%s: socket-dir is %q, want %q", d, p, socketDir)
					}
				}
			}
			for _, c := range containers(spec) {
				a := args(c)
				if v, ok := flagValue(a, "kubelet-registration-path"); ok {
					seen["registration"] = true
					if v != socketDir+"/csi.sock" {
						t.Errorf("%s: --kubelet-registration-path=%s, want %s/csi.sock", d, v, socketDir)
					}
				}
				if str(c, "name") == driverContainer {
					if v, _ := flagValue(a, "driver-name"); v != driver {
						t.Errorf("%s: volplug --driver-name=%q, CSIDriver is %q", d, v, driver)
					}
				}
			}
		}
		// CSI inline volumes in the examples name the driver too.
		for _, v := range list(podSpec(d), "volumes") {
			if p := str(v, "csi", "driver"); p != "" && p != driver {
				t.Errorf("%s: inline volume driver %q, CSIDriver is %q", d, p, driver)
			}
		}
	}
	for _, what := range []string{"StorageClass", "VolumeSnapshotClass", "DaemonSet", "socket-dir", "registration"} {
		if !seen[what] {
			t.Errorf("no %s found to check against the driver name", what)
		}
	}
}

// TestExamplesUseExistingClasses: every class an example names is deployed,
// by the same set of manifests (the local driver's or the s3 driver's).
func TestExamplesUseExistingClasses(t *testing.T) {
	for _, dir := range []string{manifestDir, s3Dir} {
		checkExamplesUseExistingClasses(t, dir)
	}
}

func checkExamplesUseExistingClasses(t *testing.T, dir string) {
	docs := loadDocs(t, dir)
	classes := map[string]bool{}
	for _, d := range docs {
		if k := d.kind(); k == "StorageClass" || k == "VolumeSnapshotClass" {
			classes[k+"/"+d.name()] = true
		}
	}
	for _, d := range docs {
		var want []string
		switch d.kind() {
		case "PersistentVolumeClaim":
			want = append(want, "StorageClass/"+str(d.obj, "spec", "storageClassName"))
		case "VolumeSnapshot":
			want = append(want, "VolumeSnapshotClass/"+str(d.obj, "spec", "volumeSnapshotClassName"))
		case "Pod":
			for _, v := range list(podSpec(d), "volumes") {
				if sc := str(v, "ephemeral", "volumeClaimTemplate", "spec", "storageClassName"); sc != "" {
					want = append(want, "StorageClass/"+sc)
				}
			}
		}
		for _, w := range want {
			if !classes[w] {
				t.Errorf("%s: uses %s, which deploy/%s does not create", d, w, dir)
			}
		}
	}
}

var (
	helpOnce  sync.Once
	helpFlags map[string]map[string]bool // subcommand -> its flags
	helpErr   error
)

// volplugSubcommands are the subcommands the manifests run.
var volplugSubcommands = []string{"csi", "mounter", "keeper"}

// volplugFlags builds ./cmd/volplug once and returns the flags that
// `volplug SUB --help` lists, for SUB in volplugSubcommands.
func volplugFlags(t *testing.T, sub string) map[string]bool {
	t.Helper()
	helpOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			helpErr = err
			return
		}
		dir, err := os.MkdirTemp("", "volplug-deploy-test")
		if err != nil {
			helpErr = err
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "volplug")
		build := exec.Command(goBin, "build", "-o", bin, "./cmd/volplug")
		build.Dir = ".." // the module root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			helpErr = errors.New("go build ./cmd/volplug: " + err.Error() + "\n" + string(out))
			return
		}
		helpFlags = map[string]map[string]bool{}
		for _, sub := range volplugSubcommands {
			out, err := exec.Command(bin, sub, "--help").CombinedOutput()
			if err != nil {
				helpErr = errors.New("volplug " + sub + " --help: " + err.Error() + "\n" + string(out))
				return
			}
			helpFlags[sub] = parseHelpFlags(string(out))
		}
	})
	if helpErr != nil {
		t.Fatal(helpErr)
	}
	flags, ok := helpFlags[sub]
	if !ok {
		t.Fatalf("volplug %s: not in volplugSubcommands", sub)
	}
	return flags
}

// csiFlags returns the flags `volplug csi --help` lists.
func csiFlags(t *testing.T) map[string]bool { return volplugFlags(t, "csi") }

// A cobra help line: "  -h, --help   help for csi" or "      --pool string  ...".
var helpFlagLine = regexp.MustCompile(`(?m)^\s+(?:-[A-Za-z], )?--([A-Za-z0-9][A-Za-z0-9_-]*)`)

func parseHelpFlags(help string) map[string]bool {
	flags := map[string]bool{}
	for _, m := range helpFlagLine.FindAllStringSubmatch(help, -1) {
		flags[m[1]] = true
	}
	return flags
}

func TestParseHelpFlags(t *testing.T) {
	got := parseHelpFlags("Flags:\n      --backend string   storage backend\n  -h, --help   help\n      --v Level   verbosity\n")
	for _, f := range []string{"backend", "help", "v"} {
		if !got[f] {
			t.Errorf("flag %s not parsed from help: %v", f, got)
		}
	}
}

// checkDriverArgs checks the volplug container's args against the binary.
func checkDriverArgs(t *testing.T, where string, a []string, flags map[string]bool) {
	t.Helper()
	if len(a) == 0 || a[0] != "csi" {
		t.Errorf("%s: volplug args must start with the subcommand \"csi\", got %q", where, a)
		return
	}
	checkFlags(t, where, a, flags)
}

// checkVolplugArgs checks the args of any volplug container (the CSI
// driver, the mounter) against the flags of the subcommand they start with.
func checkVolplugArgs(t *testing.T, where string, a []string) {
	t.Helper()
	if len(a) == 0 || !slices.Contains(volplugSubcommands, a[0]) {
		t.Errorf("%s: volplug args must start with one of the subcommands %q, got %q", where, volplugSubcommands, a)
		return
	}
	checkFlags(t, where, a, volplugFlags(t, a[0]))
}

// checkFlags checks that a[1:] are --flags that `volplug a[0]` has.
func checkFlags(t *testing.T, where string, a []string, flags map[string]bool) {
	t.Helper()
	for _, arg := range a[1:] {
		name, ok := strings.CutPrefix(arg, "--")
		if !ok {
			t.Errorf("%s: argument %q is not a --flag", where, arg)
			continue
		}
		name, _, _ = strings.Cut(name, "=")
		if !flags[name] {
			t.Errorf("%s: --%s is not a flag of `volplug %s` (it has: %s)", where, name, a[0], sortedKeys(flags))
		}
	}
	if v, ok := flagValue(a, "mode"); ok && !slices.Contains([]string{"all", "controller", "node"}, v) {
		t.Errorf("%s: --mode=%s", where, v)
	}
}

func TestDriverFlagsExist(t *testing.T) {
	flags := csiFlags(t)
	for _, want := range []string{"backend", "endpoint", "node-id", "pool", "driver-name", "mode"} {
		if !flags[want] {
			t.Fatalf("`volplug csi --help` does not list --%s; help parsing is broken: %v", want, sortedKeys(flags))
		}
	}
	found := 0
	for _, d := range loadDocs(t, manifestDir) {
		for _, c := range containers(podSpec(d)) {
			if str(c, "name") != driverContainer {
				continue
			}
			found++
			checkDriverArgs(t, d.String(), args(c), flags)
		}
	}
	if found == 0 {
		t.Fatal("no volplug container in deploy/kubernetes")
	}

	// The chart's DaemonSet template is not YAML until rendered: read the
	// "- --flag" lines of the volplug container's block.
	tpl, err := os.ReadFile(filepath.Join(chartDir, "templates", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a := templateContainerArgs(string(tpl), driverContainer)
	if len(a) == 0 {
		t.Fatal("chart: no args found for the volplug container in templates/daemonset.yaml")
	}
	checkDriverArgs(t, "charts/volplug/templates/daemonset.yaml", a, flags)
}

var (
	containerStart = regexp.MustCompile(`^(\s*)- name: (\S+)\s*$`)
	argLine        = regexp.MustCompile(`^\s*- (csi|mounter|keeper|--[A-Za-z0-9-]+(?:=.*)?)\s*$`)
)

// templateContainerArgs returns the literal args ("csi", "--flag=...") of
// one container in a template.
func templateContainerArgs(tpl, name string) []string {
	var out []string
	for _, line := range templateContainerBlock(tpl, name) {
		if m := argLine.FindStringSubmatch(line); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// templateContainerBlock returns the lines of one container in a template,
// from its "- name:" line to the next "- name:" at the same indentation.
func templateContainerBlock(tpl, name string) []string {
	var out []string
	indent := ""
	in := false
	for line := range strings.SplitSeq(tpl, "\n") {
		if m := containerStart.FindStringSubmatch(line); m != nil {
			if in && m[1] == indent {
				break
			}
			if !in && m[2] == name {
				in, indent = true, m[1]
				continue
			}
		}
		if in {
			out = append(out, line)
		}
	}
	return out
}

// TestSocketWiring: every container reaches the driver at the socket the
// driver listens on, through the same host directory.
func TestSocketWiring(t *testing.T) { checkSocketWiring(t, loadDocs(t, manifestDir)) }

func checkSocketWiring(t *testing.T, docs []doc) {
	t.Helper()
	for _, d := range docs {
		spec := podSpec(d)
		if d.kind() != "DaemonSet" && !isPatch(d.file) {
			continue
		}
		for _, c := range containers(spec) {
			a := args(c)
			var sock string
			if str(c, "name") == driverContainer {
				ep, _ := flagValue(a, "endpoint")
				s, ok := strings.CutPrefix(ep, "unix://")
				if !ok {
					t.Errorf("%s: volplug --endpoint=%q is not unix://", d, ep)
					continue
				}
				sock = s
			} else if s, ok := flagValue(a, "csi-address"); ok {
				sock = s
			} else {
				t.Errorf("%s: container %s has no --csi-address", d, str(c, "name"))
				continue
			}
			if sock != "/csi/csi.sock" {
				t.Errorf("%s: container %s uses socket %q, want /csi/csi.sock", d, str(c, "name"), sock)
			}
			mounted := false
			for _, m := range list(c, "volumeMounts") {
				if str(m, "name") == "socket-dir" && str(m, "mountPath") == path.Dir(sock) {
					mounted = true
				}
			}
			if !mounted {
				t.Errorf("%s: container %s does not mount socket-dir at %s", d, str(c, "name"), path.Dir(sock))
			}
		}
	}
}

// TestNodePluginMounts: what the brief of the node plugin requires.
func TestNodePluginMounts(t *testing.T) { checkNodePluginMounts(t, loadDocs(t, manifestDir)) }

func checkNodePluginMounts(t *testing.T, docs []doc) {
	t.Helper()
	for _, d := range docs {
		if d.kind() != "DaemonSet" {
			continue
		}
		for _, c := range containers(podSpec(d)) {
			if str(c, "name") != driverContainer {
				continue
			}
			if get(c, "securityContext", "privileged") != true {
				t.Errorf("%s: volplug must be privileged", d)
			}
			mounts := map[string]map[string]any{}
			for _, m := range list(c, "volumeMounts") {
				mm, _ := m.(map[string]any)
				mounts[str(mm, "mountPath")] = mm
			}
			if m := mounts["/var/lib/kubelet"]; m == nil || str(m, "mountPropagation") != "Bidirectional" {
				t.Errorf("%s: /var/lib/kubelet must be mounted with mountPropagation Bidirectional", d)
			}
			for _, p := range []string{"/dev", "/csi"} {
				if mounts[p] == nil {
					t.Errorf("%s: volplug does not mount %s", d, p)
				}
			}
			pool, _ := flagValue(args(c), "pool")
			if pool == "" || mounts[pool] == nil {
				t.Errorf("%s: --pool=%q is not a mounted volume", d, pool)
			}
			if v, _ := flagValue(args(c), "node-id"); v != "$(NODE_NAME)" {
				t.Errorf("%s: --node-id=%q, want $(NODE_NAME) from the downward API", d, v)
			}
			if get(c, "resources", "requests") == nil || get(c, "resources", "limits") == nil {
				t.Errorf("%s: volplug needs resource requests and limits", d)
			}
			if get(c, "livenessProbe") == nil {
				t.Errorf("%s: volplug has no livenessProbe", d)
			}
		}
	}
}

// --- Helm chart ---

func readYAML(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if m == nil {
		t.Fatalf("%s is empty", file)
	}
	return m
}

func TestChartParses(t *testing.T) {
	chart := readYAML(t, filepath.Join(chartDir, "Chart.yaml"))
	for _, k := range []string{"apiVersion", "name", "version"} {
		if str(chart, k) == "" {
			t.Errorf("Chart.yaml: %s is missing", k)
		}
	}
	if v := str(chart, "apiVersion"); v != "v2" {
		t.Errorf("Chart.yaml: apiVersion %q, want v2", v)
	}
	readYAML(t, filepath.Join(chartDir, "values.yaml"))
}

// A reference to a value: .Values.a.b (also $.Values.a.b).
var valuesRef = regexp.MustCompile(`\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)`)

func TestChartValuesExist(t *testing.T) {
	values := readYAML(t, filepath.Join(chartDir, "values.yaml"))
	files, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no templates: %v", err)
	}
	refs := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range valuesRef.FindAllStringSubmatch(string(data), -1) {
			refs++
			keys := strings.Split(strings.TrimPrefix(m[1], "."), ".")
			var v any = values
			for i, k := range keys {
				mm, ok := v.(map[string]any)
				if !ok {
					t.Errorf("%s: .Values.%s: %s is not a map in values.yaml", f, strings.Join(keys, "."), strings.Join(keys[:i], "."))
					break
				}
				if _, ok := mm[k]; !ok {
					t.Errorf("%s: .Values.%s: key %q is not in values.yaml", f, strings.Join(keys, "."), strings.Join(keys[:i+1], "."))
					break
				}
				v = mm[k]
			}
		}
	}
	if refs == 0 {
		t.Fatal("no .Values references found: the regexp is broken")
	}
}

// TestChartMatchesManifests keeps the chart's defaults and the plain
// manifests from drifting apart: same driver name, same images.
func TestChartMatchesManifests(t *testing.T) {
	values := readYAML(t, filepath.Join(chartDir, "values.yaml"))
	docs := loadDocs(t, manifestDir)
	manifestImages := map[string]bool{}
	for _, d := range docs {
		if d.kind() == "CSIDriver" && d.name() != str(values, "driverName") {
			t.Errorf("values.yaml driverName %q, CSIDriver is %q", str(values, "driverName"), d.name())
		}
		if d.kind() != "DaemonSet" && !isPatch(d.file) {
			continue
		}
		for _, c := range containers(podSpec(d)) {
			if str(c, "name") == driverContainer {
				continue
			}
			manifestImages[str(c, "image")] = true
		}
	}
	chartImages := map[string]bool{}
	sidecars, _ := get(values, "sidecars").(map[string]any)
	for _, s := range sidecars {
		chartImages[str(s, "image")] = true
	}
	if a, b := sortedKeys(manifestImages), sortedKeys(chartImages); a != b {
		t.Errorf("sidecar images differ:\n manifests: %s\n chart:     %s", a, b)
	}
	for img := range manifestImages {
		if !strings.HasPrefix(img, "registry.k8s.io/sig-storage/") || !strings.Contains(img, ":v") {
			t.Errorf("sidecar image %q: want registry.k8s.io/sig-storage/NAME:vX.Y.Z", img)
		}
	}
}

func sortedKeys(m map[string]bool) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, " ")
}

// Every container of every manifest and of the chart names its image with
// imagePullPolicy IfNotPresent, and every volplug image has the tag the
// build gives (the chart's image.tag), so an image imported into a node's
// runtime runs with no registry.
func TestImagesRunWithoutARegistry(t *testing.T) {
	values := readYAML(t, filepath.Join(chartDir, "values.yaml"))
	want := str(values, "image", "repository") + ":" + str(values, "image", "tag")
	if p := str(values, "image", "pullPolicy"); p != "IfNotPresent" {
		t.Errorf("values.yaml image.pullPolicy %q, want IfNotPresent", p)
	}
	seen := 0
	for _, d := range loadDocs(t, ".") {
		for _, c := range containers(podSpec(d)) {
			image := str(c, "image")
			if image == "" && isPatch(d.file) {
				continue // a patch that changes args only
			}
			if p := str(c, "imagePullPolicy"); p != "IfNotPresent" {
				t.Errorf("%s: container %s: imagePullPolicy %q, want IfNotPresent", d, str(c, "name"), p)
			}
			if strings.Contains(image, "volplug/volplug") {
				seen++
				if image != want {
					t.Errorf("%s: container %s: image %s, want %s (the chart's)", d, str(c, "name"), image, want)
				}
			}
		}
	}
	if seen < 2 {
		t.Errorf("found %d volplug containers in deploy/, want the CSI node plugin and the flex installer", seen)
	}
	// `make image` tags the archive it builds with the Makefile's IMAGE.
	mk, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*(\S+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile: no `IMAGE ?= ...` line")
	}
	if string(m[1]) != want {
		t.Errorf("make image tags %s, the manifests and chart run %s", m[1], want)
	}
}

// csi-provisioner v6.3.0 watches and updates VolumeSnapshots (a finalizer
// on a restore's source); without the grant its log repeats "cannot watch".
func TestProvisionerMayWatchSnapshots(t *testing.T) {
	granted := func(rules []any) bool {
		for _, r := range rules {
			res := fmt.Sprint(get(r, "resources"))
			verbs := fmt.Sprint(get(r, "verbs"))
			if strings.Contains(res, "volumesnapshots") && !strings.Contains(res, "volumesnapshotcontents") &&
				strings.Contains(verbs, "watch") && strings.Contains(verbs, "update") {
				return true
			}
		}
		return false
	}
	found := false
	for _, d := range loadDocs(t, manifestDir) {
		if d.kind() == "ClusterRole" && granted(list(d.obj, "rules")) {
			found = true
		}
	}
	if !found {
		t.Error("deploy/kubernetes: no ClusterRole lets the provisioner watch and update volumesnapshots")
	}
	tpl, err := os.ReadFile(filepath.Join(chartDir, "templates", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`resources: \["volumesnapshots"\]\s+verbs: \[[^]]*"watch"[^]]*"update"`).Match(tpl) {
		t.Error("chart rbac.yaml: the provisioner may not watch and update volumesnapshots")
	}
}
