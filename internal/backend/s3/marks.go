package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/volplug/volplug/internal/backend"
)

// mark is what volplug writes beside a volume it made.
type mark struct {
	Name          string    `json:"name"`
	Capacity      int64     `json:"capacity"`
	BucketCreated bool      `json:"bucketCreated,omitempty"`
	Created       time.Time `json:"created"`
}

// markKey is where a volume's mark lives: inside a bucket volplug made,
// beside a prefix volplug made (so a prefix's mount never shows it).
func markKey(prefix string) string {
	if prefix == "" {
		return ".volplug/volume.json"
	}
	return ".volplug/volumes/" + strings.TrimSuffix(prefix, "/") + ".json"
}

func readMark(ctx context.Context, cl *minio.Client, bucket, prefix string) (*mark, error) {
	obj, err := cl.GetObject(ctx, bucket, markKey(prefix), minio.GetObjectOptions{})
	if err != nil {
		return nil, storageErr("read the mark of "+volumeID(bucket, prefix), err)
	}
	defer obj.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(obj); err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "NoSuchKey" || code == "NoSuchBucket" {
			return nil, fmt.Errorf("volume %s has no volplug mark: %w", volumeID(bucket, prefix), backend.ErrNotFound)
		}
		return nil, storageErr("read the mark of "+volumeID(bucket, prefix), err)
	}
	var m mark
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		return nil, fmt.Errorf("the mark of %s is damaged: %v: %w", volumeID(bucket, prefix), err, backend.ErrPrecondition)
	}
	return &m, nil
}

func writeMark(ctx context.Context, cl *minio.Client, bucket, prefix string, m *mark) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	// One PUT replaces the object whole: the mark is never half written.
	_, err = cl.PutObject(ctx, bucket, markKey(prefix), bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/json", DisableContentSha256: true})
	if err != nil {
		return storageErr("mark "+volumeID(bucket, prefix), err)
	}
	return nil
}

func hasObjects(ctx context.Context, cl *minio.Client, bucket, prefix string) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, MaxKeys: 1}) {
		if o.Err != nil {
			return false, storageErr("list "+volumeID(bucket, prefix), o.Err)
		}
		return true, nil
	}
	return false, nil
}
