package csirpc

import (
	"regexp"
	"strings"
)

// A CO's mount flags may only take rights away (ro, nosuid, nodev,
// noexec), tune the mount (atime, sync, discard, SELinux context) or tune
// the filesystem with an option that names no file or device. Anything
// else is refused before a mount is attempted:
//
//   - flags that change what is mounted or where (bind, remount, move,
//     loop, offset=, X-mount.*, user, owner): the driver decides that;
//   - filesystem options that name another file or device (xfs logdev=,
//     rtdev=; ext4 journal_path=, journal_dev=, usrjquota=): they would
//     let a request reach a disk of the host;
//   - on a read-only request, flags that grant (rw, suid, dev, exec,
//     defaults): with "ro" they either change nothing or undo what was
//     asked, and mount(8) lets the last of "ro,rw" win.
//
// The lists are the options of the filesystems volplug formats (ext4,
// xfs, btrfs) and of the VFS; a flag outside them is refused with its name,
// so a new need is a one-line change rather than a silent pass.
var (
	vfsFlags = words(`ro rw nosuid suid nodev dev noexec exec defaults
		atime noatime diratime nodiratime relatime norelatime strictatime nostrictatime lazytime nolazytime
		sync async dirsync mand nomand silent loud iversion noiversion`)
	fsFlags = words(`discard nodiscard nouuid
		acl noacl user_xattr nouser_xattr barrier nobarrier
		journal_checksum nojournal_checksum journal_async_commit delalloc nodelalloc
		auto_da_alloc noauto_da_alloc init_itable noinit_itable block_validity noblock_validity
		dioread_lock dioread_nolock i_version nombcache
		quota noquota usrquota grpquota prjquota uquota gquota pquota qnoenforce uqnoenforce gqnoenforce pqnoenforce
		grpid bsdgroups nogrpid sysvgroups orlov oldalloc dax inlinecrypt
		attr2 noattr2 filestreams ikeep noikeep inode32 inode64 largeio nolargeio noalign swalloc wsync
		compress compress-force space_cache nospace_cache ssd nossd ssd_spread nossd_spread
		autodefrag noautodefrag datacow nodatacow datasum nodatasum flushoncommit noflushoncommit
		treelog notreelog skip_balance clear_cache rescan_uuid_tree degraded user_subvol_rm_allowed`)
	// fsKeys take a value that is a number, a word or a path inside the
	// filesystem (btrfs subvol=), never a file or device of the host.
	fsKeys = words(`data commit errors barrier stripe max_batch_time min_batch_time journal_ioprio
		init_itable resuid resgid data_err dax
		allocsize logbufs logbsize sunit swidth
		compress compress-force space_cache discard max_inline metadata_ratio thread_pool
		subvol subvolid fatal_errors rescue`)
	// selinuxKeys take a label, quoted when it holds commas.
	selinuxKeys  = words(`context fscontext defcontext rootcontext`)
	selinuxValue = regexp.MustCompile(`^"[A-Za-z0-9_.:,-]{1,255}"$|^[A-Za-z0-9_.:-]{1,255}$`)
	// grants are what a read-only request may not ask for.
	grants = words(`rw suid dev exec defaults`)

	flagValue = regexp.MustCompile(`^[A-Za-z0-9_.:@+=/-]{1,255}$`)
)

func words(s string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(s) {
		m[w] = true
	}
	return m
}

// CheckMountFlags validates a capability's mount flags, each of which may
// hold several comma-separated options (mount(8) joins them with commas).
func CheckMountFlags(flags []string, readOnly bool) error {
	for _, f := range flags {
		if f == "" {
			return Invalid("mount flag %q is not valid", f)
		}
		for _, opt := range splitOptions(f) {
			if err := checkMountOption(opt, readOnly); err != nil {
				return err
			}
		}
	}
	return nil
}

// splitOptions splits at commas outside double quotes: kubelet quotes an
// SELinux context, which holds commas (context="...:s0:c1,c2").
func splitOptions(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func checkMountOption(opt string, readOnly bool) error {
	if key, value, _ := strings.Cut(opt, "="); selinuxKeys[key] && selinuxValue.MatchString(value) {
		return nil
	}
	if !flagValue.MatchString(opt) {
		return Invalid("mount flag %q is not valid: a mount option is letters, digits and _.:@+=/-", opt)
	}
	key, value, hasValue := strings.Cut(opt, "=")
	switch {
	case readOnly && grants[opt]:
		return Invalid("mount flag %q grants more than the read-only access asked for", opt)
	case !hasValue && (vfsFlags[opt] || fsFlags[opt]):
		return nil
	case hasValue && fsKeys[key] && value != "" && (key == "subvol" || !strings.Contains(value, "/")):
		return nil
	}
	return Invalid("mount flag %q is not allowed: volplug passes only options that restrict or tune a mount, never ones that change what is mounted or name another file or device", opt)
}

// fsTypeRE is a filesystem type as mount(8) and mkfs.<type> name it.
var fsTypeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)

// CheckFsType validates a filesystem type ("" is the default): it becomes
// part of a program's name (mkfs.<type>), so it is a plain word.
func CheckFsType(fs string) error {
	if fs != "" && !fsTypeRE.MatchString(fs) {
		return Invalid("filesystem type %q is not valid", fs)
	}
	return nil
}
