package bucketfs_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/bucketfs"
)

// A volume of 10 GiB at prefix "vols/pvc-1" of a bucket, for a pod that
// runs as a non-root user with fsGroup 2000, grown to 20 GiB later.
func ExampleMount() {
	cfg := bucketfs.Config{
		Endpoint:      "https://cos.example.com",
		AccessKey:     "from the secret",
		SecretKey:     "from the secret",
		Bucket:        "volumes",
		Prefix:        "vols/pvc-1",
		CapacityBytes: 10 << 30,
		GID:           2000,
		FileMode:      0o660,
		DirMode:       0o770,
		AllowOther:    true,
		CacheTTL:      5 * time.Second,
	}
	s, err := bucketfs.Mount(context.Background(), "/var/lib/kubelet/pods/x/volumes/v", cfg)
	if err != nil {
		log.Fatal(err) // wrong keys, no bucket, dead endpoint: within seconds
	}
	if err := s.SetCapacity(20 << 30); err != nil { // expansion
		log.Fatal(err)
	}
	if err := s.Unmount(); err != nil { // EBUSY while files are open
		log.Fatal(err)
	}
}

// A long-lived process mounts and holds /dev/fuse; a server (here in the
// same process) serves it as /dev/fd/N; the holder unmounts.
func ExampleMountFUSE() {
	cfg := bucketfs.Config{Endpoint: "http://127.0.0.1:7070", AccessKey: "k", SecretKey: "s", Bucket: "volumes"}
	dev, err := bucketfs.MountFUSE("/mnt/v", cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()
	s, err := bucketfs.Mount(context.Background(), fmt.Sprintf("/dev/fd/%d", dev.Fd()), cfg)
	if err != nil {
		unix.Unmount("/mnt/v", 0)
		log.Fatal(err)
	}
	unix.Unmount("/mnt/v", 0)
	s.Wait()
}
