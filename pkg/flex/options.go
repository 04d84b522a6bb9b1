package flex

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Option keys kubelet sets in the JSON argument. The user's own options
// (the PV's or inline volume's `options`) sit beside them, and a user key
// overrides a kubelet key of the same name.
const (
	KeyFsType         = "kubernetes.io/fsType"
	KeyReadWrite      = "kubernetes.io/readwrite" // "ro" or "rw"
	KeyPVOrVolumeName = "kubernetes.io/pvOrVolumeName"
	KeyPodName        = "kubernetes.io/pod.name"
	KeyPodNamespace   = "kubernetes.io/pod.namespace"
	KeyPodUID         = "kubernetes.io/pod.uid"
	KeyServiceAccount = "kubernetes.io/serviceAccount.name"
	KeyFsGroup        = "kubernetes.io/mounterArgs.FsGroup"
	KeyFsGroupOld     = "kubernetes.io/fsGroup" // before Kubernetes 1.15
	// SecretPrefix starts one key per secret entry; the value is base64.
	SecretPrefix = "kubernetes.io/secret/"

	kubePrefix = "kubernetes.io/"
)

// Options is the JSON argument, parsed.
type Options struct {
	FsType       string
	ReadOnly     bool
	VolumeName   string // the PV's name, or the pod's name for an inline volume
	PodName      string
	PodNamespace string
	PodUID       string
	// ServiceAccount is the pod's service account name.
	ServiceAccount string
	// FsGroup is the pod's fsGroup, nil when it has none.
	FsGroup *int64
	// Secrets holds the decoded kubernetes.io/secret/* entries.
	Secrets Secrets
	// Driver holds every key outside kubernetes.io/: the driver's own options.
	Driver map[string]string
	// Kubernetes holds every kubernetes.io/ key except secrets, including
	// the ones parsed above, so nothing a newer kubelet sends is lost.
	Kubernetes map[string]string
}

// ParseOptions parses the JSON argument: an object whose values are all
// strings. Error messages name keys, never secret values.
func ParseOptions(data []byte) (*Options, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("options are not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("options are not a JSON object: %w", err)
	}
	if raw == nil {
		return nil, errors.New("options are not a JSON object: null")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("options: unexpected data after the JSON object")
	}
	o := &Options{Secrets: Secrets{}, Driver: map[string]string{}, Kubernetes: map[string]string{}}
	for _, k := range slices.Sorted(maps.Keys(raw)) { // sorted: stable error messages
		s, ok := raw[k].(string)
		if !ok {
			return nil, fmt.Errorf("option %q: value must be a string", k)
		}
		switch {
		case strings.HasPrefix(k, SecretPrefix):
			name := strings.TrimPrefix(k, SecretPrefix)
			v, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				// The value is a secret: say where, not what.
				return nil, fmt.Errorf("option %q: not base64", k)
			}
			o.Secrets[name] = string(v)
		case strings.HasPrefix(k, kubePrefix):
			o.Kubernetes[k] = s
		default:
			o.Driver[k] = s
		}
	}
	o.FsType = o.Kubernetes[KeyFsType]
	o.VolumeName = o.Kubernetes[KeyPVOrVolumeName]
	o.PodName = o.Kubernetes[KeyPodName]
	o.PodNamespace = o.Kubernetes[KeyPodNamespace]
	o.PodUID = o.Kubernetes[KeyPodUID]
	o.ServiceAccount = o.Kubernetes[KeyServiceAccount]
	switch rw := o.Kubernetes[KeyReadWrite]; rw {
	case "ro":
		o.ReadOnly = true
	case "rw", "":
	default:
		return nil, fmt.Errorf("option %q: %q is neither \"ro\" nor \"rw\"", KeyReadWrite, rw)
	}
	for _, k := range []string{KeyFsGroup, KeyFsGroupOld} {
		s, ok := o.Kubernetes[k]
		if !ok {
			continue
		}
		gid, err := strconv.ParseInt(s, 10, 64)
		if err != nil || gid < 0 {
			return nil, fmt.Errorf("option %q: %q is not a group ID", k, s)
		}
		o.FsGroup = &gid
		break // the new key wins over the old one
	}
	return o, nil
}

// LogValue shows every option but the secrets' values, so a whole Options
// can be logged safely.
func (o *Options) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("kubernetes", o.Kubernetes),
		slog.Any("driver", o.Driver),
		slog.Any("secrets", o.Secrets),
	)
}

// Secrets are decoded secret entries. Every way of printing them (fmt,
// slog, encoding/json) shows the keys only; read a value with Get.
type Secrets map[string]string

const redacted = "REDACTED"

// Get returns one secret's value.
func (s Secrets) Get(key string) (string, bool) {
	v, ok := s[key]
	return v, ok
}

func (s Secrets) redacted() map[string]string {
	out := make(map[string]string, len(s))
	for k := range s {
		out[k] = redacted
	}
	return out
}

// String and Format keep values out of %v, %s, %+v and %#v.
func (s Secrets) String() string { return fmt.Sprint(s.redacted()) }

func (s Secrets) Format(f fmt.State, verb rune) { fmt.Fprint(f, s.redacted()) }

// LogValue keeps values out of slog.
func (s Secrets) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, len(s))
	for _, k := range slices.Sorted(maps.Keys(s)) {
		attrs = append(attrs, slog.String(k, redacted))
	}
	return slog.GroupValue(attrs...)
}

// MarshalJSON keeps values out of JSON, so a logged or saved struct that
// embeds Secrets cannot leak them.
func (s Secrets) MarshalJSON() ([]byte, error) { return json.Marshal(s.redacted()) }
