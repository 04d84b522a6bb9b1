package sanity

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"go.yaml.in/yaml/v3"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/backend/s3"
	"github.com/volplug/volplug/internal/csi"
	"github.com/volplug/volplug/internal/mounter"
	"github.com/volplug/volplug/internal/testutil"
)

// objectStorage is one S3 server and one mounter for the s3 variants.
type objectStorage struct {
	server *testutil.S3Server
	socket string
}

func startObjectStorage(t *testing.T, dir string) *objectStorage {
	o := &objectStorage{server: testutil.StartS3Server(t), socket: filepath.Join(dir, "mounter.sock")}
	m, err := mounter.NewServer(filepath.Join(dir, "mounter"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := mounter.Listen(o.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	o.server.MakeBucket(t, "sanity-shared")
	return o
}

// config serves the s3 driver for variant v and returns the suite's
// configuration, with the credentials in every call that carries secrets.
func (o *objectStorage) config(t *testing.T, base string, v variant) sanity.TestConfig {
	if err := os.MkdirAll(base, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := sanity.NewTestConfig()
	if v.split {
		cfg.Address = o.startDriver(t, base, "node", csi.ModeNode)
		cfg.ControllerAddress = o.startDriver(t, base, "controller", csi.ModeController)
	} else {
		cfg.Address = o.startDriver(t, base, "all", csi.ModeAll)
	}
	cfg.TargetPath = filepath.Join(base, "target")
	cfg.StagingPath = filepath.Join(base, "staging")
	cfg.TestVolumeSize = 64 << 20
	cfg.TestVolumeAccessType = v.accessType
	cfg.IdempotentCount = 3
	if v.mounter != "" {
		cfg.TestVolumeParameters = map[string]string{"mounter": v.mounter, "bucket": "sanity-shared", "prefix": "volumes"}
	}
	creds := map[string]string{"accessKeyID": o.server.AccessKey, "secretAccessKey": o.server.SecretKey, "endpoint": o.server.Endpoint}
	secrets := map[string]map[string]string{}
	for _, call := range []string{"CreateVolumeSecret", "DeleteVolumeSecret", "ControllerPublishVolumeSecret",
		"ControllerUnpublishVolumeSecret", "ControllerValidateVolumeCapabilitiesSecret", "NodeStageVolumeSecret",
		"NodePublishVolumeSecret", "CreateSnapshotSecret", "DeleteSnapshotSecret", "ControllerExpandVolumeSecret",
		"NodeExpandVolumeSecret", "ListSnapshotsSecret"} {
		secrets[call] = creds
	}
	data, err := yaml.Marshal(secrets)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SecretsFile = filepath.Join(base, "secrets.yaml")
	if err := os.WriteFile(cfg.SecretsFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (o *objectStorage) startDriver(t *testing.T, base, name string, mode csi.Mode) string {
	var b backend.Backend = s3.New(s3.Options{MounterSocket: o.socket})
	d, err := csi.New(csi.Options{Name: "s3.csi.volplug.io", NodeID: "sanity-node", Mode: mode}, b)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, d, filepath.Join(base, name+".sock"))
}
