// Package flex is the FlexVolume protocol as Kubernetes speaks it (see
// kubernetes/kubernetes pkg/volume/flexvolume): the calls and their argument
// order, the option keys kubelet puts in the JSON argument, and the one JSON
// object a driver answers with. Both sides use it: a driver (volplug flex)
// to parse what it is given and answer, and a caller playing kubelet
// (volplug adapt, tests) to run a driver executable and read its answer.
package flex

import "encoding/json"

// Calls, as the first argument of the driver executable.
const (
	CallInit          = "init"
	CallGetVolumeName = "getvolumename"
	CallAttach        = "attach"        // <json> <nodeName>
	CallDetach        = "detach"        // <volumeName> <nodeName>
	CallWaitForAttach = "waitforattach" // <device> <json>
	CallIsAttached    = "isattached"    // <json> <nodeName>
	CallMountDevice   = "mountdevice"   // <deviceMountPath> <device> <json>
	CallUnmountDevice = "unmountdevice" // <deviceMountPath>
	CallMount         = "mount"         // <podVolumeDir> <json>
	CallUnmount       = "unmount"       // <podVolumeDir>
	CallExpandVolume  = "expandvolume"  // <json> <deviceMountPath> <newBytes> <oldBytes>
	CallExpandFS      = "expandfs"      // <json> <devicePath> <deviceMountPath> <newBytes> <oldBytes>

	// volplug's extension, for `volplug adapt` (Kubernetes never makes
	// these calls): a driver that reports provision:true in init's
	// capabilities creates and deletes volumes, so the adapter can serve
	// CreateVolume and DeleteVolume.
	CallProvision = "provision" // <json>; answers volumeID, capacity, volumeContext
	CallDelete    = "delete"    // <volumeID> <json>; a missing volume is a Success
)

// Options the adapter puts in provision's JSON argument, beside the
// storage class parameters and the usual kubernetes.io/ keys.
const (
	KeyRequiredBytes = "kubernetes.io/requiredBytes" // at least this size; absent: the driver's default
	KeyLimitBytes    = "kubernetes.io/limitBytes"    // at most this size; absent: no limit
)

// Args names the arguments after the call name, in the order kubelet and
// controller-manager pass them; "json" is the options object.
var Args = map[string][]string{
	CallInit:          {},
	CallGetVolumeName: {"json"},
	CallAttach:        {"json", "nodeName"},
	CallDetach:        {"volumeName", "nodeName"},
	CallWaitForAttach: {"device", "json"},
	CallIsAttached:    {"json", "nodeName"},
	CallMountDevice:   {"deviceMountPath", "device", "json"},
	CallUnmountDevice: {"deviceMountPath"},
	CallMount:         {"podVolumeDir", "json"},
	CallUnmount:       {"podVolumeDir"},
	CallExpandVolume:  {"json", "deviceMountPath", "newBytes", "oldBytes"},
	CallExpandFS:      {"json", "devicePath", "deviceMountPath", "newBytes", "oldBytes"},
	CallProvision:     {"json"},
	CallDelete:        {"volumeID", "json"},
}

// Status is the outcome of a call.
type Status string

const (
	StatusSuccess      Status = "Success"
	StatusFailure      Status = "Failure"
	StatusNotSupported Status = "Not supported"
)

// Result is the one JSON object a driver prints.
type Result struct {
	Status     Status `json:"status"`
	Message    string `json:"message,omitempty"`
	Device     string `json:"device,omitempty"`
	VolumeName string `json:"volumeName,omitempty"`
	// Attached is a pointer so that isattached can say false: kubelet's own
	// struct drops a false value, and "absent" must not be read as false.
	Attached      *bool         `json:"attached,omitempty"`
	Capabilities  *Capabilities `json:"capabilities,omitempty"`
	VolumeNewSize int64         `json:"volumeNewSize,omitempty"`

	// volplug's extension. Kubernetes ignores these fields.

	// Code names the gRPC code a Failure means, as the CSI spec spells it
	// ("NOT_FOUND", "ALREADY_EXISTS", ...); the adapter answers INTERNAL
	// without it.
	Code string `json:"code,omitempty"`
	// VolumeID, Capacity (bytes) and VolumeContext answer provision.
	VolumeID      string            `json:"volumeID,omitempty"`
	Capacity      int64             `json:"capacity,omitempty"`
	VolumeContext map[string]string `json:"volumeContext,omitempty"`
}

// Success, Failure and NotSupported build the three kinds of answer.
func Success() *Result { return &Result{Status: StatusSuccess} }

func Failure(msg string) *Result { return &Result{Status: StatusFailure, Message: msg} }

func NotSupported(msg string) *Result { return &Result{Status: StatusNotSupported, Message: msg} }

// Bool returns a pointer to b, for Result.Attached.
func Bool(b bool) *bool { return &b }

// Capabilities is what init reports. Every field is always written, since
// an omitted one means kubelet's default, not false.
type Capabilities struct {
	Attach           bool `json:"attach"`
	SELinuxRelabel   bool `json:"selinuxRelabel"`
	SupportsMetrics  bool `json:"supportsMetrics"`
	FSGroup          bool `json:"fsGroup"`
	RequiresFSResize bool `json:"requiresFSResize"`
	// Provision (volplug's extension, default false) says the driver
	// answers the provision and delete calls.
	Provision bool `json:"provision"`
}

// DefaultCapabilities are what kubelet assumes for a field init leaves out.
func DefaultCapabilities() Capabilities {
	return Capabilities{Attach: true, SELinuxRelabel: true, SupportsMetrics: false, FSGroup: true, RequiresFSResize: true}
}

// UnmarshalJSON starts from kubelet's defaults, as kubelet does, so a
// driver that omits a field is read the way Kubernetes reads it.
func (c *Capabilities) UnmarshalJSON(data []byte) error {
	type plain Capabilities // no methods: no recursion
	v := plain(DefaultCapabilities())
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*c = Capabilities(v)
	return nil
}
