package s3

import (
	"context"
	"fmt"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/tags"
	"k8s.io/klog/v2"
)

// S3 cannot remove a bucket and its last object in one step, and the mark
// must go last (a retry finds what to remove by it), so a delete cut
// short between the mark and the bucket would leave an empty bucket with
// no mark: not volplug's, as far as a retry could tell. So before the
// mark goes, the bucket is tagged as being deleted by volplug (a tag lives
// on the bucket, not in it); a retry that finds no mark removes an empty
// bucket with that tag, and nothing else.
const deletingTag = "volplug.io/deleting"

// tagDeleting marks a bucket volplug made as one it is deleting.
func tagDeleting(ctx context.Context, cl *minio.Client, bucket string) error {
	t, err := tags.NewTags(map[string]string{deletingTag: "true"}, false)
	if err != nil {
		return err
	}
	if err := cl.SetBucketTagging(ctx, bucket, t); err != nil {
		if minio.ToErrorResponse(err).Code == "NotImplemented" {
			// A store without bucket tags: the delete goes on as before,
			// and a crash in the window leaves an empty bucket.
			klog.InfoS("delete: the store cannot tag buckets", "bucket", bucket, "err", err)
			return nil
		}
		return storageErr("tag bucket "+bucket+" as being deleted", err)
	}
	return nil
}

// finishDeleting removes bucket if a delete cut short left it tagged.
// Tags it cannot read (no such bucket, no tags, keys that may not read
// them: a static volume's) mean nothing of volplug's is there.
func finishDeleting(ctx context.Context, cl *minio.Client, bucket string) error {
	t, err := cl.GetBucketTagging(ctx, bucket)
	if err != nil {
		klog.V(2).InfoS("delete: no volplug tag on the bucket", "bucket", bucket, "err", err)
		return nil
	}
	if t.ToMap()[deletingTag] != "true" {
		return nil
	}
	if err := cl.RemoveBucket(ctx, bucket); err != nil && minio.ToErrorResponse(err).Code != "NoSuchBucket" {
		return fmt.Errorf("finish deleting bucket %s: %w", bucket, storageErr("delete bucket "+bucket, err))
	}
	klog.InfoS("delete: removed a bucket a delete cut short had left", "bucket", bucket)
	return nil
}
