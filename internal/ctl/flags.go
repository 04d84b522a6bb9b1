package ctl

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// SecretsEnv names the environment variable csc reads secrets from. Secrets
// come from the environment rather than a flag so they never show in `ps`.
const SecretsEnv = "X_CSI_SECRETS"

// ParseCapability parses csc's volume capability syntax,
// MODE,TYPE[,FSTYPE[,MOUNT_FLAGS]]. MODE is an access mode name
// (SINGLE_NODE_WRITER, case and '-' vs '_' do not matter) or its number;
// TYPE is "mount" (2) or "block" (1). Everything after the third comma is
// mount flags, themselves comma separated, as in csc:
//
//	SINGLE_NODE_WRITER,mount,ext4,noatime,discard
func ParseCapability(s string) (*csi.VolumeCapability, error) {
	parts := strings.SplitN(s, ",", 4)
	if len(parts) < 2 {
		return nil, fmt.Errorf("volume capability %q: want MODE,TYPE[,FSTYPE,MOUNT_FLAGS]", s)
	}
	mode, err := parseAccessMode(parts[0])
	if err != nil {
		return nil, fmt.Errorf("volume capability %q: %w", s, err)
	}
	c := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}}
	switch t := strings.ToLower(strings.TrimSpace(parts[1])); t {
	case "block", "1":
		if len(parts) > 2 {
			return nil, fmt.Errorf("volume capability %q: a block volume takes no filesystem type or mount flags", s)
		}
		c.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	case "mount", "2":
		m := &csi.VolumeCapability_MountVolume{}
		if len(parts) > 2 {
			m.FsType = strings.TrimSpace(parts[2])
		}
		if len(parts) > 3 {
			for _, f := range strings.Split(parts[3], ",") {
				// Empty items come from stray commas; a driver would
				// pass them to mount as "" and fail, so drop them here.
				if f = strings.TrimSpace(f); f != "" {
					m.MountFlags = append(m.MountFlags, f)
				}
			}
		}
		c.AccessType = &csi.VolumeCapability_Mount{Mount: m}
	default:
		return nil, fmt.Errorf("volume capability %q: access type %q is neither mount nor block", s, parts[1])
	}
	return c, nil
}

func parseAccessMode(s string) (csi.VolumeCapability_AccessMode_Mode, error) {
	s = strings.TrimSpace(s)
	name := strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
	if v, ok := csi.VolumeCapability_AccessMode_Mode_value[name]; ok && v != 0 {
		return csi.VolumeCapability_AccessMode_Mode(v), nil
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("unknown access mode %q", s)
	}
	// Unlike csc, which silently sends no mode for an unknown number,
	// refuse: the driver would only answer INVALID_ARGUMENT less clearly.
	if _, ok := csi.VolumeCapability_AccessMode_Mode_name[int32(n)]; !ok || n == 0 {
		return 0, fmt.Errorf("unknown access mode number %d", n)
	}
	return csi.VolumeCapability_AccessMode_Mode(n), nil
}

// FormatCapability writes a capability back in the syntax ParseCapability
// reads, so output can be pasted into the next command.
func FormatCapability(c *csi.VolumeCapability) string {
	mode := c.GetAccessMode().GetMode().String()
	if c.GetBlock() != nil {
		return mode + ",block"
	}
	m := c.GetMount()
	if m == nil {
		return mode + ",?"
	}
	s := mode + ",mount"
	if m.GetFsType() != "" || len(m.GetMountFlags()) > 0 {
		s += "," + m.GetFsType()
	}
	if len(m.GetMountFlags()) > 0 {
		s += "," + strings.Join(m.GetMountFlags(), ",")
	}
	return s
}

// ParseKV parses "k=v,k2=v2" into m (csc's map syntax). A key without '='
// gets the empty value, as in csc. Later keys overwrite earlier ones.
func ParseKV(s string, m map[string]string) error {
	for item := range strings.SplitSeq(s, ",") {
		if item == "" {
			continue
		}
		k, v, _ := strings.Cut(item, "=")
		if k = strings.TrimSpace(k); k == "" {
			return fmt.Errorf("%q: empty key", item)
		}
		m[k] = v
	}
	return nil
}

// FormatKV prints a map in ParseKV's syntax with sorted keys, so output is
// stable between runs.
func FormatKV(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(m[k])
	}
	return b.String()
}

// secretsFromEnv reads X_CSI_SECRETS. It returns nil when unset, so
// requests carry no secrets map at all rather than an empty one.
func secretsFromEnv() (map[string]string, error) {
	v := os.Getenv(SecretsEnv)
	if v == "" {
		return nil, nil
	}
	m := map[string]string{}
	if err := ParseKV(v, m); err != nil {
		// Never echo the value: it holds the secrets.
		return nil, fmt.Errorf("$%s is not k=v[,k=v...]", SecretsEnv)
	}
	return m, nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first so "Gi" is not read as "G" followed by "i".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	{"k", 1e3}, {"B", 1},
}

// ParseSize reads a byte count: a plain integer, or one with a Kubernetes
// style suffix (1Gi, 512Mi, 10G).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	num := s
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("size %q: negative", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: %w", s, errors.New("too large"))
	}
	return n * mult, nil
}

// capsValue is a repeatable --cap flag.
type capsValue struct{ caps []*csi.VolumeCapability }

func (v *capsValue) String() string {
	s := make([]string, len(v.caps))
	for i, c := range v.caps {
		s[i] = FormatCapability(c)
	}
	return strings.Join(s, " ")
}

func (v *capsValue) Set(s string) error {
	c, err := ParseCapability(s)
	if err != nil {
		return err
	}
	v.caps = append(v.caps, c)
	return nil
}

func (v *capsValue) Type() string { return "MODE,TYPE[,FS,FLAGS]" }

// kvValue is a repeatable k=v[,k=v] flag that fills one map.
type kvValue struct{ m map[string]string }

func (v *kvValue) String() string { return FormatKV(v.m) }

func (v *kvValue) Set(s string) error {
	if v.m == nil {
		v.m = map[string]string{}
	}
	return ParseKV(s, v.m)
}

func (v *kvValue) Type() string { return "k=v[,k=v]" }

// sizeValue is a byte count flag that accepts suffixes.
type sizeValue struct{ n *int64 }

func (v sizeValue) String() string {
	if v.n == nil {
		return "0"
	}
	return strconv.FormatInt(*v.n, 10)
}

func (v sizeValue) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*v.n = n
	return nil
}

func (v sizeValue) Type() string { return "bytes" }
