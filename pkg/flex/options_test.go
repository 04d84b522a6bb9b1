package flex

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestParseOptions(t *testing.T) {
	in := `{
		"kubernetes.io/fsType": "ext4",
		"kubernetes.io/readwrite": "ro",
		"kubernetes.io/pvOrVolumeName": "pv1",
		"kubernetes.io/pod.name": "p", "kubernetes.io/pod.namespace": "ns",
		"kubernetes.io/pod.uid": "u-1", "kubernetes.io/serviceAccount.name": "sa",
		"kubernetes.io/mounterArgs.FsGroup": "2000", "kubernetes.io/fsGroup": "1",
		"kubernetes.io/future": "x",
		"kubernetes.io/secret/password": "` + base64.StdEncoding.EncodeToString([]byte("hunter2")) + `",
		"size": "1Gi", "fsType": "xfs"
	}`
	o, err := ParseOptions([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if o.FsType != "ext4" || !o.ReadOnly || o.VolumeName != "pv1" || o.PodName != "p" ||
		o.PodNamespace != "ns" || o.PodUID != "u-1" || o.ServiceAccount != "sa" {
		t.Errorf("parsed %+v", o)
	}
	if o.FsGroup == nil || *o.FsGroup != 2000 {
		t.Errorf("FsGroup = %v, want 2000 (the new key wins)", o.FsGroup)
	}
	if v, _ := o.Secrets.Get("password"); v != "hunter2" {
		t.Errorf("secret = %q", v)
	}
	if o.Driver["size"] != "1Gi" || o.Driver["fsType"] != "xfs" || len(o.Driver) != 2 {
		t.Errorf("Driver = %v", o.Driver)
	}
	if o.Kubernetes["kubernetes.io/future"] != "x" {
		t.Errorf("unknown kubernetes.io key lost: %v", o.Kubernetes)
	}
	if _, ok := o.Kubernetes[SecretPrefix+"password"]; ok {
		t.Error("secret kept in Kubernetes map")
	}

	old, err := ParseOptions([]byte(`{"kubernetes.io/fsGroup": "7"}`))
	if err != nil || old.FsGroup == nil || *old.FsGroup != 7 || old.ReadOnly {
		t.Errorf("old fsGroup key: %+v, %v", old, err)
	}
}

func TestParseOptionsErrors(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `"x"`, `{`, `{"a":1}`, `{"a":null}`, `{"a":{}}`, `{"a":"b"} {}`, `{"a":"b"}x`,
		`{"kubernetes.io/readwrite":"maybe"}`,
		`{"kubernetes.io/mounterArgs.FsGroup":"-1"}`,
		`{"kubernetes.io/fsGroup":"staff"}`,
		`{"kubernetes.io/secret/k":"not base64 hunter2!"}`,
	} {
		if o, err := ParseOptions([]byte(in)); err == nil {
			t.Errorf("ParseOptions(%q) = %+v, want an error", in, o)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows a secret value: %v", err)
		}
	}
}

func TestSecretsRedacted(t *testing.T) {
	o, err := ParseOptions([]byte(`{"kubernetes.io/secret/key":"` +
		base64.StdEncoding.EncodeToString([]byte("hunter2")) + `","a":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "options", o, "secrets", o.Secrets)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "options", o, "secrets", o.Secrets)
	j, _ := json.Marshal(o)
	buf.Write(j)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		fmt.Fprintf(&buf, verb, o.Secrets)
		fmt.Fprintf(&buf, verb, *o)
	}
	buf.WriteString(o.Secrets.String())
	if strings.Contains(buf.String(), "hunter2") {
		t.Fatalf("secret printed:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "key") {
		t.Error("secret keys should still be shown")
	}
}

func FuzzParseOptions(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"kubernetes.io/fsType":"ext4","size":"1Gi"}`,
		`{"kubernetes.io/secret/a":"aHVudGVyMg=="}`, `{"kubernetes.io/readwrite":"ro"}`,
		`{"kubernetes.io/mounterArgs.FsGroup":"12"}`, `{"a":1}`, `[`, `{"a":"b"}{}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := ParseOptions(data)
		if err != nil {
			return
		}
		var raw map[string]string
		if err := json.Unmarshal(data, &raw); err != nil {
			t.Fatalf("accepted what encoding/json rejects: %v", err)
		}
		// Every key lands in exactly one place, and no secret value
		// survives printing.
		if n := len(o.Secrets) + len(o.Driver) + len(o.Kubernetes); n != len(raw) {
			t.Fatalf("%d keys in, %d out", len(raw), n)
		}
		printed := fmt.Sprintf("%v %+v %#v", o.Secrets, *o, o.Secrets)
		j, _ := json.Marshal(o)
		for _, v := range o.Secrets {
			if len(v) >= 4 && v != redacted && (strings.Contains(printed, v) || bytes.Contains(j, []byte(v))) &&
				!strings.Contains(fmt.Sprint(o.Driver, o.Kubernetes, o.Secrets.redacted()), v) {
				t.Fatalf("secret %q printed", v)
			}
		}
		if o.ReadOnly != (raw[KeyReadWrite] == "ro") {
			t.Fatal("ReadOnly does not follow kubernetes.io/readwrite")
		}
	})
}
