// Package bucketfs is a FUSE filesystem over one S3 bucket, or one prefix
// inside a bucket: the built-in mounter of volplug's object-storage
// volumes. It runs on hanwen/go-fuse v2 and speaks S3 through minio-go v7.
//
// # Layout
//
// A file is an object: file "a/b" under prefix "vols/x/" is the key
// "vols/x/a/b". A directory is a marker object "a/" (mkdir makes it) or
// exists implicitly while any key lies under it, as other S3 tools leave
// them. When an object and a directory share a name, the directory wins.
// Modes and owners are mount options (Config UID, GID, FileMode,
// DirMode), the same for every file, so a pod's fsGroup or non-root user
// is served without per-object metadata. mtime is the object's
// LastModified.
//
// # Capacity
//
// The capacity is a quota kept here: usage is the sum of the object sizes
// under the prefix, counted by listing at mount and then tracked through
// every write, truncate, unlink and rename of this mount. statfs (df)
// reports the capacity and what is left; growing a file past it fails with
// ENOSPC; Server.SetCapacity changes it at run time (expansion). Objects
// others write meanwhile are counted at the next mount. Counting lists
// every key under the prefix once (1,000 keys a request), so a mount of a
// prefix with millions of objects takes a while.
//
// # Writes
//
// A file written sequentially from offset 0 (a new file, or one opened
// with O_TRUNC) streams: every PartSize bytes become a multipart upload
// part, sent in the background while the writer goes on (at most
// UploadConcurrency parts in flight over the mount: memory is about
// PartSize x (files being written + UploadConcurrency)). A file that ends
// within its first part is one PUT. Any other write (into an existing
// file, or out of order) and any truncate to a size other than 0 moves the
// file into a staging file: an unlinked temporary file in a private 0700
// directory under StagingDir, downloaded first if the object has data.
// The staging files of a mount together stay under StagingLimit (EFBIG
// past it). The close of a writable descriptor, fsync and the last
// release store the file: the upload completes, or the staging file is
// uploaded (parallel parts); small files go up after the close (below). A
// read of a file being streamed stores it first (later writes then go
// through staging). An upload error is returned by that close or fsync
// (EIO); a failed stream leaves the object as it was and its parts
// aborted. Nothing is stored before the first flush, so a new file is
// invisible to other mounts until then.
//
// # Write-back of small files
//
// A streamed file that ends within its first part and at most 1 MiB (or
// a new empty file) is stored after its close, in the background: close
// returns once its PUT is started (at most 32 PUTs in flight per mount,
// close waiting for a slot: at most 32 MiB). Until the PUT ends the file
// is pending: this mount finds, stats, lists and reads it at once, and
// whatever else touches it (read, write, truncate, fsync, unlink, rename)
// waits for the PUT first, so the store sees the changes in order. What
// this means:
//
//   - Close-to-open across mounts holds only after fsync: another mount
//     (or S3 client) sees a small file once its PUT has ended, usually
//     milliseconds after the close. fsync(2) before the close waits for
//     the PUT and returns its error, as close did before.
//   - close succeeds even if the PUT then fails. A failed PUT is logged,
//     and returned (EIO, EACCES, ...) once by the file's next fsync or
//     flush on this mount; the store keeps what it had (a new file is
//     gone).
//   - Unmount, or the kernel's unmount, returns from Server.Wait only
//     after every PUT has ended; the mounter waits for them
//     (Server.Drain) before it exits on SIGTERM. A process killed outright
//     (SIGKILL, OOM) loses the small files closed in its last moments
//     without an fsync.
//
// Larger files, staged files, fsync, truncate(2) and rename store before
// they return, as before.
//
// # Reads
//
// Ranged GETs with adaptive read-ahead per open file: a reader that goes
// on where it stopped is sequential, and its window doubles from 1 MiB up
// to ReadAheadMax, the next window fetched in the background while the
// current one is read (at most two windows per open file). A reader still
// sequential once the window is at its largest gets the rest of the file
// in parts of ReadAheadMax, the next fetched while one is read, handed
// over in order. ReadParallel parts can be in flight at once: a client
// alone reads 1.5-2x faster with four, but through the mounter on 2 cores
// one read faster (the shared CPU is the bound), hence the default of 1.
// A stream owns two parts' buffers and borrows the rest from a budget of
// 128 MiB per mount, so many readers share it. Any jump stops the stream, resets the window and
// fetches only what was asked. The kernel sends one read at a time per
// file (SyncRead), in order.
//
// # Metadata cache
//
// Directory listings are kept for CacheTTL and answer lookups (and their
// absence) without a request; this mount's own changes update them. Once a
// listing is stale, new names are asked of the store one by one until
// those requests have cost as much as listing the directory again (one
// request per 1,000 names), and then it is listed again: creating many
// files in one directory costs a listing per TTL, not a request per file
// (cache.go, relistNow). The
// kernel caches entries, attributes and absences for the same TTL. So a
// change by another client shows here within CacheTTL, and O_EXCL is only
// as exclusive as that: two mounts creating one name both succeed, and the
// last stored wins. Usage counts this mount's own changes only.
//
// # Rename
//
// Rename is a server-side copy and a delete. A directory is renamed key
// by key, which is not atomic: a crash halfway leaves both trees.
//
// # Errnos
//
//	ENOSPC        a write or truncate would pass the capacity
//	EFBIG         a staging file would pass StagingLimit; a streamed file
//	              of more than 10,000 parts
//	EROFS         any change on a ReadOnly mount
//	EPERM         link (hard links), symlink, mknod (fifos, sockets,
//	              devices); chmod or chown to other values than the
//	              mount's modes and owners
//	ENOTSUP       setxattr (no extended attributes are kept); fallocate;
//	              O_TMPFILE
//	ENODATA       getxattr, removexattr (there are none); listxattr is empty
//	EINVAL        rename with RENAME_EXCHANGE or RENAME_WHITEOUT
//	EEXIST        rename with RENAME_NOREPLACE onto an existing name
//	ENOTEMPTY     rmdir, or rename onto a directory, with keys under it
//	ENAMETOOLONG  a key longer than S3's 1,024 bytes
//	EIO           the store failed or cannot be reached (after minio-go's
//	              retries, about 5 s; the cause is logged, never the keys)
//	EACCES        the store refused the keys or the request
//	EINTR         the request was interrupted (a signal) while waiting
//	ENOENT        no such object or directory
//
// Accepted and not kept: utimes (S3 sets the time when an object is
// stored). File locks (flock, fcntl) work within one mount only, by the
// kernel. chmod and chown to the mount's own values succeed.
//
// # Mounting
//
// Mount checks the bucket first, with a client that does not retry and a
// ConnectTimeout (5 s), so wrong keys, a missing bucket or a dead endpoint
// fail the mount in seconds, with the cause. Root mounts with mount(2)
// directly (no fusermount needed); others fall back to fusermount.
// Mount also serves an already mounted /dev/fuse given as /dev/fd/N (see
// MountFUSE), so a long-lived process can hold the mount. Server.SetKeys
// rotates the keys of a mounted filesystem (checked before use). Keys are
// never logged, put in argv or in errors; Config's String hides them.
//
// # Handing a mount over
//
// As root, a mount is served by this package's own loop over go-fuse's
// protocol layer (serve.go), which learns from every request and reply
// which node IDs and handles the kernel holds (table.go); node IDs are
// inode numbers given out here. Server.Handover stops the loop between
// two requests, stores what is written and not yet stored, and returns the
// /dev/fuse fd and a State; Resume and Start serve the same mount from
// another Server (in another process: the mounter passes the fd with
// SCM_RIGHTS), with the same node IDs and handles, while applications only
// wait. A crash of the serving process still ends the mount (ENOTCONN):
// nothing keeps the fd or the state outside it. A process that serves
// /dev/fd/N and also uses the mount itself calls PollHack once.
package bucketfs
