package adapt

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/volplug/volplug/internal/csirpc"
	"github.com/volplug/volplug/pkg/flex"
)

// Keys kubelet puts in a CSI volume context when the CSIDriver has
// podInfoOnMount, and the FlexVolume keys kubelet would have sent instead.
var podKeys = map[string]string{
	"csi.storage.k8s.io/pod.name":            flex.KeyPodName,
	"csi.storage.k8s.io/pod.namespace":       flex.KeyPodNamespace,
	"csi.storage.k8s.io/pod.uid":             flex.KeyPodUID,
	"csi.storage.k8s.io/serviceAccount.name": flex.KeyServiceAccount,
}

const csiPrefix = "csi.storage.k8s.io/"

// driverOptions builds the JSON argument kubelet would have handed the
// driver: its kubernetes.io/ keys, then the volume's own attributes (a
// static PV's volumeAttributes, or what provision answered), which
// override them as a flex PV's options do. The result holds secrets: it
// goes to the driver's argv and nowhere else.
type driverOptions struct {
	volumeID string
	attrs    map[string]string // the volume context, or storage class parameters
	capa     csirpc.Capability
	readOnly bool
	secrets  map[string]string
	extra    map[string]string // call-specific kubernetes.io/ keys
}

func (o driverOptions) json() string {
	m := map[string]string{
		flex.KeyFsType:         o.capa.FsType,
		flex.KeyReadWrite:      "rw",
		flex.KeyPVOrVolumeName: o.volumeID,
	}
	if o.readOnly || o.capa.ReadOnly {
		m[flex.KeyReadWrite] = "ro"
	}
	if o.capa.MountGroup != "" {
		m[flex.KeyFsGroup] = o.capa.MountGroup
	}
	for k, v := range o.extra {
		m[k] = v
	}
	for k, v := range o.attrs {
		if flexKey, ok := podKeys[k]; ok {
			m[flexKey] = v
			continue
		}
		if strings.HasPrefix(k, csiPrefix) {
			continue // the CO's own keys (ephemeral, PVC names): not the driver's options
		}
		m[k] = v
	}
	for k, v := range o.secrets {
		m[flex.SecretPrefix+k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	data, err := json.Marshal(m)
	if err != nil { // a map of strings always encodes
		panic(err)
	}
	return string(data)
}

// validGroup checks a VOLUME_MOUNT_GROUP value: a numeric group ID.
func validGroup(g string) bool {
	n, err := strconv.ParseInt(g, 10, 64)
	return g == "" || (err == nil && n >= 0)
}

// idRE is what the adapter takes as a volume ID: a PV's name (a migrated
// flex volume keeps it as its handle) or what `provision` answered, in
// letters, digits and ._-:~@+= with "/" between names. The ID reaches the
// driver as kubernetes.io/pvOrVolumeName and in argv (never a shell); the
// adapter cannot know a driver's own form, so it refuses what no PV name
// or sane ID holds: "..", an absolute path, whitespace, control or shell
// characters.
var idRE = regexp.MustCompile(`^[A-Za-z0-9_:~@+=-][A-Za-z0-9._:~@+=-]*(/[A-Za-z0-9._:~@+=-]+)*$`)

// checkID is csirpc.CheckID and the adapter's form.
func checkID(id string) error {
	if err := csirpc.CheckID(id); err != nil {
		return err
	}
	if !idRE.MatchString(id) || slices.Contains(strings.Split(id, "/"), "..") {
		return csirpc.Invalid("volume ID %q: want letters, digits and ._-:~@+= with '/' between names, no '..'", id)
	}
	return nil
}

// checkIDAndPath is csirpc.CheckIDAndPath with the adapter's ID form.
func checkIDAndPath(id, what, path string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	return csirpc.CheckNodePath(what, path)
}
