package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/minio/minio-go/v7"

	"github.com/volplug/volplug/internal/ctl"
	"github.com/volplug/volplug/internal/s3server"
)

// startServer starts versitygw when no --s3-endpoint was given, and sets
// up the secrets either way.
func (s *s3Demo) startServer(ctx context.Context) error {
	if s.o.endpoint != "" {
		s.n.begin("", "Object storage: "+s.o.endpoint,
			"The endpoint given with --s3-endpoint; the keys come from "+envAccessKey+" and "+envSecretKey+" and are never shown.")
		return s.useStorage(s.o.endpoint, s.o.accessKey, s.o.secretKey)
	}
	return s.do(ctx, "Start an S3 server: versitygw on 127.0.0.1",
		"No --s3-endpoint was given, so the demo runs its own object storage: versitygw over a private "+
			"directory, with random keys handed to it in its environment (never on a command line, never printed).",
		func(ctx context.Context) error {
			srv, err := s3server.Start(ctx, s3server.Options{Bin: s.o.versitygw,
				DataDir: filepath.Join(s.dir, "s3data"), LogPath: filepath.Join(s.dir, "versitygw.log")})
			if err != nil {
				return err
			}
			s.srv = srv
			s.push("Stop the S3 server (SIGTERM)", "", func(context.Context) error {
				if err := srv.Stop(); err != nil {
					return err
				}
				s.n.detail("versitygw (pid %d) exited", srv.Pid)
				return nil
			})
			s.n.detail("%s --port %s --keep-alive posix %s", s.o.versitygw, strings.TrimPrefix(srv.Endpoint, "http://"), srv.Dir)
			s.n.detail("serving %s, pid %d; a bucket is a directory in %s", srv.Endpoint, srv.Pid, srv.Dir)
			return s.useStorage(srv.Endpoint, srv.AccessKey, srv.SecretKey)
		})
}

// useStorage sets the CSI secrets every call that touches the storage
// carries, as the StorageClass's secret would.
func (s *s3Demo) useStorage(endpoint, access, secret string) error {
	s.secrets = map[string]string{"accessKeyID": access, "secretAccessKey": secret, "endpoint": endpoint}
	if s.o.region != "" {
		s.secrets["region"] = s.o.region
	}
	cl, err := s3Client(endpoint, s.o.region, access, secret)
	if err != nil {
		return err
	}
	s.cl = cl
	keys := make([]string, 0, len(s.secrets))
	for _, k := range []string{"accessKeyID", "secretAccessKey", "endpoint", "region"} {
		if _, ok := s.secrets[k]; ok {
			keys = append(keys, k)
		}
	}
	s.n.detail("the CSI secret (a Kubernetes Secret the StorageClass names) holds %s; values not shown",
		strings.Join(keys, ", "))
	return nil
}

func (s *s3Demo) driverArgs() []string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "demo-node"
	}
	return []string{"--backend=s3", "--endpoint=unix://" + s.sock, "--node-id=" + host,
		"--mounter-socket=" + s.mounterSock, "--mounter-state-dir=" + s.mounterState, "--mounter-log=" + s.mounterLog}
}

// launchDriver starts `volplug csi --backend=s3` and connects to it; the
// restart after kill -9 uses it again with another log.
func (s *s3Demo) launchDriver(ctx context.Context, logName string) error {
	args := s.driverArgs()
	s.n.detail("volplug csi %s", strings.Join(args, " "))
	s.logPath = filepath.Join(s.dir, logName)
	drv, err := startDriver(args, s.logPath)
	if err != nil {
		return err
	}
	s.drv = drv
	conn, err := drv.waitReady(ctx, s.sock)
	if err != nil {
		return err
	}
	s.conn = conn
	s.ctrl, s.node = csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	s.n.detail("pid %d, Probe says ready", drv.cmd.Process.Pid)
	return nil
}

func (s *s3Demo) startS3Driver(ctx context.Context) error {
	return s.do(ctx, "Start the driver: volplug csi --backend=s3",
		"The CSI driver, a child of the demo. FUSE mounts are not its own: at the first NodeStage it starts "+
			"`volplug mounter` detached (in Kubernetes, a DaemonSet of its own), so that a driver restart never ends a mount.",
		func(ctx context.Context) error {
			// Pushed first, so they run last: the mounter outlives the driver.
			s.push("Stop the mounter the driver started (SIGTERM)",
				"On one machine nothing else would: the mounter is detached from the driver on purpose.",
				func(context.Context) error { return s.stopMounter() })
			s.push("Stop the driver (SIGTERM)",
				"Like a driver pod being deleted: it finishes the calls in flight and exits.",
				func(context.Context) error {
					if s.conn != nil {
						_ = s.conn.Close()
					}
					if s.drv == nil {
						return nil // it never started: the error was reported then
					}
					return s.drv.stop(stopGrace) // the one running now, after a restart too
				})
			return s.launchDriver(ctx, "driver.log")
		})
}

func (s *s3Demo) createBucket(ctx context.Context) error {
	return s.do(ctx, fmt.Sprintf("CreateVolume %q: %s, %s, mounter %s", s.bucket, ctl.HumanBytes(s.opts.size),
		s.capability.GetAccessMode().GetMode(), s.o.mounterKind),
		"A PVC (ReadWriteMany) of a StorageClass whose provisioner is s3.csi.volplug.io: the external-provisioner "+
			"calls CreateVolume with the provisioner secret. The driver makes a bucket named after the volume "+
			"and marks it as volplug's, with the size the pod will see as its quota.",
		func(ctx context.Context) error {
			// Pushed before the call: DeleteVolume is idempotent, and a call cut
			// short (timeout, Ctrl-C) may still have made the bucket.
			s.push("DeleteVolume",
				"The PVC is deleted: the external-provisioner calls DeleteVolume with the secret. The driver removes "+
					"the objects, then its mark, then the bucket, an order a retry can finish.",
				func(ctx context.Context) error {
					id := s.volID
					if id == "" {
						id = s.bucket
					}
					if keys := s.objectKeys(ctx, id); len(keys) > 0 {
						s.n.detail("bucket %s holds %s", id, strings.Join(keys, ", "))
					}
					if _, err := s.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: s.secrets}); err != nil {
						return fmt.Errorf("DeleteVolume: %w", err)
					}
					ok, err := s.cl.BucketExists(ctx, s.bucket)
					if err != nil {
						return fmt.Errorf("look for bucket %s: %w", s.bucket, err)
					}
					if ok {
						return fmt.Errorf("bucket %s is still there after DeleteVolume", s.bucket)
					}
					s.n.detail("bucket %s is gone from the storage", s.bucket)
					return nil
				})
			r, err := s.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
				Name: s.bucket, CapacityRange: &csi.CapacityRange{RequiredBytes: s.opts.size},
				VolumeCapabilities: []*csi.VolumeCapability{s.capability}, Parameters: s.params, Secrets: s.secrets,
			})
			if err != nil {
				return fmt.Errorf("CreateVolume: %w", err)
			}
			v := r.GetVolume()
			s.volID, s.volCtx = v.GetVolumeId(), v.GetVolumeContext()
			s.n.detail("volume ID %s (the bucket's name), %s", s.volID, ctl.HumanBytes(v.GetCapacityBytes()))
			s.n.detail("volume context %s (kubelet hands it to NodeStage)", ctl.FormatKV(s.volCtx))
			return s.showBucket(ctx)
		})
}

// objectKeys lists a bucket's objects, best effort: it only narrates.
func (s *s3Demo) objectKeys(ctx context.Context, bucket string) []string {
	var keys []string
	for o := range s.cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			return keys
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// showBucket lists the volume's bucket and prints volplug's mark.
func (s *s3Demo) showBucket(ctx context.Context) error {
	ok, err := s.cl.BucketExists(ctx, s.volID)
	if err != nil {
		return fmt.Errorf("look for bucket %s: %w", s.volID, err)
	}
	if !ok {
		return fmt.Errorf("CreateVolume succeeded but there is no bucket %s", s.volID)
	}
	for o := range s.cl.ListObjects(ctx, s.volID, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list bucket %s: %w", s.volID, o.Err)
		}
		s.n.detail("bucket %s holds %s (%d bytes)", s.volID, o.Key, o.Size)
	}
	obj, err := s.cl.GetObject(ctx, s.volID, ".volplug/volume.json", minio.GetObjectOptions{})
	if err != nil {
		return fmt.Errorf("read the mark: %w", err)
	}
	defer obj.Close()
	mark, err := io.ReadAll(io.LimitReader(obj, 64<<10))
	if err != nil {
		return fmt.Errorf("read the mark: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(mark, &m); err != nil {
		return fmt.Errorf("the mark is not JSON: %w", err)
	}
	s.n.detail("the mark, .volplug/volume.json: %s", mark)
	s.n.detail("it says volplug made this bucket, so DeleteVolume may remove it; a bucket without one is never touched")
	return nil
}

func (s *s3Demo) stageBucket(ctx context.Context) error {
	return s.do(ctx, "NodeStageVolume at "+s.staging,
		"A pod using the claim lands on this node: kubelet calls NodeStageVolume once for the node, with the "+
			"node-stage secret. The driver asks the mounter to mount the bucket there through FUSE, with the quota.",
		func(ctx context.Context) error {
			if err := os.MkdirAll(s.staging, 0o750); err != nil {
				return fmt.Errorf("make staging dir: %w", err)
			}
			s.push("NodeUnstageVolume at "+s.staging,
				"No pod on the node uses the bucket any more: the driver has the mounter unmount it.",
				func(ctx context.Context) error {
					_, err := s.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: s.volID, StagingTargetPath: s.staging})
					if err != nil {
						return fmt.Errorf("NodeUnstageVolume: %w", err)
					}
					return nil
				})
			if _, err := s.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
				VolumeId: s.volID, StagingTargetPath: s.staging, VolumeCapability: s.capability,
				VolumeContext: s.volCtx, Secrets: s.secrets,
			}); err != nil {
				return fmt.Errorf("NodeStageVolume: %w", err)
			}
			s.showMount(s.staging)
			line, _, err := dfLine(s.staging)
			if err != nil {
				return err
			}
			s.n.detail("df %s: %s", s.staging, line)
			return s.showMounter()
		})
}

// showMounter shows that the mounter is no child of the driver.
func (s *s3Demo) showMounter() error {
	pids := s.mounterPids()
	if len(pids) != 1 {
		return fmt.Errorf("want one mounter serving %s, found %v", s.mounterSock, pids)
	}
	ppid, sid, err := procLineage(pids[0])
	if err != nil {
		return err
	}
	drv := s.drv.cmd.Process.Pid
	if ppid == drv {
		return fmt.Errorf("the mounter %d is a child of the driver %d", pids[0], drv)
	}
	s.n.detail("the mounter: pid %d, parent %d, session %d; the driver is pid %d: not its parent, so the mounter "+
		"and its mounts outlive the driver", pids[0], ppid, sid, drv)
	return nil
}

// publish binds the staged bucket into a pod's directory.
func (s *s3Demo) publish(ctx context.Context, pod, target string, readOnly bool) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return fmt.Errorf("make pod dir: %w", err)
	}
	s.push("NodeUnpublishVolume of "+pod, "The pod is deleted: the driver unmounts its directory and removes it.",
		func(ctx context.Context) error {
			if _, err := s.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: s.volID, TargetPath: target}); err != nil {
				return fmt.Errorf("NodeUnpublishVolume: %w", err)
			}
			if _, err := os.Lstat(target); err == nil {
				return fmt.Errorf("%s is still there after NodeUnpublishVolume", target)
			}
			s.n.detail("the driver removed %s", target)
			return nil
		})
	if _, err := s.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: s.volID, StagingTargetPath: s.staging, TargetPath: target, Readonly: readOnly,
		VolumeCapability: s.capability, VolumeContext: s.volCtx,
	}); err != nil {
		return fmt.Errorf("NodePublishVolume: %w", err)
	}
	s.showMount(target)
	return nil
}

func (s *s3Demo) publishPodA(ctx context.Context) error {
	return s.do(ctx, "NodePublishVolume for pod-a at "+s.target,
		"Kubelet mounts the volume into the pod's directory: a bind mount of the staged FUSE mount.",
		func(ctx context.Context) error { return s.publish(ctx, "pod-a", s.target, false) })
}

const helloText = "hello from pod-a\n"

func (s *s3Demo) writeObject(ctx context.Context) error {
	return s.do(ctx, "pod-a writes a file: it becomes an object in the bucket",
		"What the container writes under its volumeMount is uploaded when the file is closed (or fsync'd).",
		func(ctx context.Context) error {
			name := filepath.Join(s.target, "hello.txt")
			if err := writeSync(name, []byte(helloText)); err != nil {
				return err
			}
			s.n.detail("wrote %d bytes to %s", len(helloText), name)
			info, err := s.cl.StatObject(ctx, s.volID, "hello.txt", minio.StatObjectOptions{})
			if err != nil {
				return fmt.Errorf("the object hello.txt: %w", err)
			}
			s.n.detail("object hello.txt in bucket %s: %d bytes, ETag %s", s.volID, info.Size, info.ETag)
			if s.srv != nil {
				if _, err := os.Stat(filepath.Join(s.srv.Dir, s.volID, "hello.txt")); err == nil {
					s.n.detail("versitygw keeps it as the file %s", filepath.Join(s.srv.Dir, s.volID, "hello.txt"))
				}
			}
			return nil
		})
}

func (s *s3Demo) publishPodB(ctx context.Context) error {
	return s.do(ctx, "NodePublishVolume for pod-b, read-only, at "+s.podB,
		"A second pod mounts the same claim (a bucket is ReadWriteMany; this one asks readOnly): another "+
			"bind of the same staged mount, no second FUSE server.",
		func(ctx context.Context) error {
			if err := s.publish(ctx, "pod-b", s.podB, true); err != nil {
				return err
			}
			got, err := os.ReadFile(filepath.Join(s.podB, "hello.txt"))
			if err != nil {
				return fmt.Errorf("pod-b reads hello.txt: %w", err)
			}
			if string(got) != helloText {
				return fmt.Errorf("pod-b reads %q, pod-a wrote %q", got, helloText)
			}
			s.n.detail("pod-b reads hello.txt: %q", strings.TrimSpace(string(got)))
			err = os.WriteFile(filepath.Join(s.podB, "nope.txt"), []byte("x"), 0o644)
			if !errors.Is(err, syscall.EROFS) {
				return fmt.Errorf("pod-b's read-only mount took a write: %v", err)
			}
			s.n.detail("and cannot write: %v", err)
			return nil
		})
}
