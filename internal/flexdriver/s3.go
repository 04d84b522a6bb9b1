package flexdriver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/backend/s3"
	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/pkg/flex"
)

// The s3 driver (volplug~s3/s3) is the seed's cosfs example done right:
// mount gives the bucket to `volplug mounter`, a detached process, so no
// FUSE daemon holds kubelet's output pipe or dies with kubelet; the keys
// come from kubernetes.io/secret/* and go to the mounter over its socket,
// never to argv, a log or a file others can read. Only mount and unmount:
// a bucket has nothing to attach, and nothing is staged between pods.
//
// Options (the flexVolume's options, beside kubelet's): bucket and prefix,
// or volumeID ("bucket[/prefix]"); mounter, endpoint, region, uid, gid,
// fileMode, dirMode, capacity (bytes, the built-in mounter's quota). The
// secret (type volplug/s3) holds accessKeyID and secretAccessKey (or COS's
// SecretId and SecretKey), and may hold endpoint and region.
func (d *driver) doS3(ctx context.Context, call string, args []string, o *flex.Options) (*flex.Result, error) {
	switch call {
	case flex.CallInit:
		// No relabel, and no recursive chown by kubelet: the mount gives
		// every file to the pod's fsGroup itself.
		return &flex.Result{Status: flex.StatusSuccess, Capabilities: &flex.Capabilities{}}, nil
	case flex.CallMount:
		return flex.Success(), d.mountS3(ctx, args[0], o)
	case flex.CallUnmount:
		return flex.Success(), d.unmountS3(ctx, args[0])
	}
	return flex.NotSupported(call + ": the s3 driver only mounts and unmounts"), nil
}

// s3Backend is the s3 backend as the flex driver uses it: a mounter at the
// configured socket, started detached when none answers.
func (d *driver) s3Backend() (*s3.Backend, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return s3.New(s3.Options{
		MounterSocket: d.cfg.MounterSocket, StartMounter: true, Exe: exe,
		MounterStateDir: filepath.Join(d.cfg.Pool, "mounter"),
		MounterLog:      filepath.Join(filepath.Dir(d.cfg.LogFile), "mounter.log"),
	}), nil
}

func (d *driver) mountS3(ctx context.Context, podDir string, o *flex.Options) error {
	id := o.Driver["volumeID"]
	if id == "" {
		id = o.Driver["bucket"]
		if p := o.Driver["prefix"]; p != "" {
			id += "/" + p
		}
	}
	if id == "" {
		return fmt.Errorf("no bucket: set the option bucket (and prefix), or volumeID: %w", backend.ErrInvalid)
	}
	context := map[string]string{}
	for k, v := range o.Driver {
		switch k {
		case "volumeID", "bucket", "prefix":
		default:
			context[k] = v
		}
	}
	group := ""
	if o.FsGroup != nil {
		group = strconv.FormatInt(*o.FsGroup, 10)
	}
	b, err := d.s3Backend()
	if err != nil {
		return err
	}
	return b.Stage(ctx, &backend.StageRequest{ID: id, StagingPath: podDir, ReadOnly: o.ReadOnly,
		Context: context, Secrets: backend.Secrets(o.Secrets), MountGroup: group})
}

// unmountS3 takes down the bucket at podDir, found from the kernel's mount
// table (kubelet gives nothing but the path), and removes the directory.
func (d *driver) unmountS3(ctx context.Context, podDir string) error {
	b, err := d.s3Backend()
	if err != nil {
		return err
	}
	id, err := b.VolumeAt(ctx, podDir)
	if err != nil {
		return err
	}
	if id == "" {
		if info, err := mount.New().Mounted(podDir); err != nil {
			return err
		} else if info != nil {
			return fmt.Errorf("%s holds a mount that is not a bucket of this driver: %w", podDir, backend.ErrInvalid)
		}
	} else if err := b.Unstage(ctx, id, podDir); err != nil {
		return err
	}
	if err := os.Remove(podDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unmount: %w", err)
	}
	return nil
}
