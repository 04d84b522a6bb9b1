package bucketfs

import (
	"bytes"
	"encoding/binary"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The kernel's view of a mount, as a successor must serve it: which node
// IDs it holds (and how many lookups of each it will forget), under which
// directory and name each was found, and which file handles are open.
// go-fuse keeps all of this privately; the table learns it from the bytes
// that cross /dev/fuse (the request, and the reply before it is written),
// so it is exact whatever the filesystem's code does.

// Opcodes the table follows (include/uapi/linux/fuse.h).
const (
	opLookup      = 1
	opForget      = 2
	opMkdir       = 9
	opUnlink      = 10
	opRmdir       = 11
	opRename      = 12
	opOpen        = 14
	opWrite       = 16
	opRelease     = 18
	opFsync       = 20
	opInit        = 26
	opOpendir     = 27
	opReleasedir  = 29
	opCreate      = 35
	opBatchForget = 42
	opReaddirplus = 44
	opRename2     = 45
)

// pollHackID is the node ID (and handle) of go-fuse's answer to the poll
// hack (pollHack): the protocol layer serves it without the filesystem.
const pollHackID = ^uint64(0)

var (
	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))
	entryOutSize  = int(unsafe.Sizeof(fuse.EntryOut{}))
)

// KernelNode is a node ID the kernel holds.
type KernelNode struct {
	Parent  uint64 `json:"parent,omitempty"` // 0: in no directory (unlinked, or replaced by a rename)
	Name    string `json:"name,omitempty"`
	Dir     bool   `json:"dir,omitempty"`
	Lookups uint64 `json:"lookups"` // what the kernel's FORGETs will add up to
}

// KernelHandle is a file handle the kernel holds.
type KernelHandle struct {
	Node  uint64 `json:"node"`
	Flags uint32 `json:"flags"` // open(2) flags
	Dir   bool   `json:"dir,omitempty"`
	// Dirty: written through since its last fsync. Only a crash's
	// successor (Recover) uses it: what was written died with the
	// server, and the handle's next write, flush or fsync says so (EIO).
	Dirty bool `json:"dirty,omitempty"`
}

type nameKey struct {
	parent uint64
	name   string
}

// kernelTable is the kernel's node IDs and handles of one mount.
type kernelTable struct {
	mu      sync.Mutex
	nodes   map[uint64]*KernelNode
	names   map[nameKey]uint64
	handles map[uint64]KernelHandle
	maxID   uint64 // the highest node ID the kernel was given

	j    *journal // nil: not journaled (tests, a server without a state dir)
	init []byte   // the INIT request, for the journal's snapshots
}

func newKernelTable() *kernelTable {
	return &kernelTable{nodes: map[uint64]*KernelNode{}, names: map[nameKey]uint64{}, handles: map[uint64]KernelHandle{}}
}

// observe takes in one request and its reply (nil when there is none), before
// the reply reaches the kernel.
func (t *kernelTable) observe(req, reply []byte) {
	if len(req) < inHeaderSize {
		return
	}
	h := (*fuse.InHeader)(unsafe.Pointer(&req[0]))
	args := req[inHeaderSize:]
	if ext := int(h.TotalExtlen) * 8; ext > 0 && ext <= len(args) {
		args = args[:len(args)-ext]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.j != nil {
		defer t.j.flush(t) // before the reply reaches the kernel
	}
	switch h.Opcode {
	case opForget:
		if len(args) >= 8 {
			t.forget(h.NodeId, binary.LittleEndian.Uint64(args))
		}
		return
	case opBatchForget:
		if len(args) < 8 {
			return
		}
		n := int(binary.LittleEndian.Uint32(args))
		for i, b := 0, args[8:]; i < n && len(b) >= 16; i, b = i+1, b[16:] {
			t.forget(binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:]))
		}
		return
	case opRelease, opReleasedir:
		if len(args) >= 8 {
			fh := binary.LittleEndian.Uint64(args)
			if _, ok := t.handles[fh]; ok {
				delete(t.handles, fh)
				if t.j != nil {
					t.j.op(jRelease)
					t.j.uvarint(fh)
				}
			}
		}
		return
	}
	if len(reply) < outHeaderSize {
		return
	}
	if out := (*fuse.OutHeader)(unsafe.Pointer(&reply[0])); out.Status != 0 {
		return
	}
	body := reply[outHeaderSize:]
	switch h.Opcode {
	case opLookup:
		t.entry(h.NodeId, cstring(args), body)
	case opMkdir:
		if len(args) >= 8 {
			t.entry(h.NodeId, cstring(args[8:]), body)
		}
	case opCreate:
		if len(args) >= 16 && len(body) >= entryOutSize+8 {
			id := t.entry(h.NodeId, cstring(args[16:]), body)
			fh := binary.LittleEndian.Uint64(body[entryOutSize:])
			t.open(fh, KernelHandle{Node: id, Flags: binary.LittleEndian.Uint32(args) &^ syscall.O_TRUNC})
		}
	case opOpen, opOpendir:
		if len(args) >= 4 && len(body) >= 8 && h.NodeId != pollHackID {
			t.open(binary.LittleEndian.Uint64(body), KernelHandle{
				Node: h.NodeId, Flags: binary.LittleEndian.Uint32(args), Dir: h.Opcode == opOpendir})
		}
	case opWrite, opFsync:
		if len(args) >= 8 {
			t.dirty(binary.LittleEndian.Uint64(args), h.Opcode == opWrite)
		}
	case opReaddirplus:
		t.direntplus(h.NodeId, body)
	case opUnlink, opRmdir:
		t.unname(nameKey{h.NodeId, cstring(args)})
	case opRename, opRename2:
		size := 8
		if h.Opcode == opRename2 {
			size = 16
		}
		if len(args) < size {
			return
		}
		newDir := binary.LittleEndian.Uint64(args)
		names := bytes.SplitN(args[size:], []byte{0}, 3)
		if len(names) < 2 {
			return
		}
		t.rename(nameKey{h.NodeId, string(names[0])}, nameKey{newDir, string(names[1])})
	}
}

func (t *kernelTable) rename(from, to nameKey) {
	if t.j != nil {
		t.j.op(jRename)
		t.j.uvarint(from.parent)
		t.j.str(from.name)
		t.j.uvarint(to.parent)
		t.j.str(to.name)
	}
	t.unnameQuiet(to)
	if id, ok := t.names[from]; ok {
		delete(t.names, from)
		t.names[to] = id
		t.nodes[id].Parent, t.nodes[id].Name = to.parent, to.name
	}
}

func (t *kernelTable) open(fh uint64, h KernelHandle) {
	t.handles[fh] = h
	if t.j != nil {
		t.j.openRecord(fh, h)
	}
}

// dirty records a write (or an fsync) through a handle; only the changes
// are journaled, so a stream of writes costs one record.
func (t *kernelTable) dirty(fh uint64, written bool) {
	h, ok := t.handles[fh]
	if !ok || h.Dirty == written {
		return
	}
	h.Dirty = written
	t.handles[fh] = h
	if t.j != nil {
		if written {
			t.j.op(jDirty)
		} else {
			t.j.op(jSynced)
		}
		t.j.uvarint(fh)
	}
}

// setInit keeps the kernel's INIT request for the journal.
func (t *kernelTable) setInit(init []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.init = init
	if t.j != nil {
		t.j.op(jInit)
		t.j.str(string(init))
		t.j.flush(t)
	}
}

// entry takes in a fuse_entry_out for name in parent and returns its node ID.
func (t *kernelTable) entry(parent uint64, name string, body []byte) uint64 {
	if len(body) < entryOutSize {
		return 0
	}
	e := (*fuse.EntryOut)(unsafe.Pointer(&body[0]))
	if e.NodeId == 0 { // a negative entry: nothing to forget
		return 0
	}
	t.found(parent, name, e.NodeId, e.Mode&syscall.S_IFMT == syscall.S_IFDIR)
	return e.NodeId
}

func (t *kernelTable) found(parent uint64, name string, id uint64, dir bool) {
	if id == pollHackID {
		return
	}
	if t.j != nil {
		t.j.op(jFound)
		t.j.uvarint(parent)
		t.j.str(name)
		t.j.uvarint(id)
		t.j.uvarint(bit(dir))
	}
	t.maxID = max(t.maxID, id)
	n := t.nodes[id]
	if n == nil {
		n = &KernelNode{}
		t.nodes[id] = n
	}
	n.Lookups++
	n.Dir = dir
	k := nameKey{parent, name}
	if old, ok := t.names[k]; ok && old != id {
		t.nodes[old].Parent, t.nodes[old].Name = 0, ""
	}
	if n.Parent != 0 && (n.Parent != parent || n.Name != name) {
		delete(t.names, nameKey{n.Parent, n.Name})
	}
	n.Parent, n.Name = parent, name
	t.names[k] = id
}

// direntplus takes in a READDIRPLUS reply: fuse_direntplus records, each a
// fuse_entry_out and a fuse_dirent padded to 8 bytes. The kernel takes a
// lookup of every entry with a node ID but "." and "..".
func (t *kernelTable) direntplus(parent uint64, b []byte) {
	const direntSize = 24 // ino, off, namelen, type
	for len(b) >= entryOutSize+direntSize {
		e := (*fuse.EntryOut)(unsafe.Pointer(&b[0]))
		namelen := int(binary.LittleEndian.Uint32(b[entryOutSize+16:]))
		end := entryOutSize + direntSize + namelen
		if end > len(b) {
			return
		}
		name := string(b[entryOutSize+direntSize : end])
		if e.NodeId != 0 && name != "." && name != ".." {
			t.found(parent, name, e.NodeId, e.Mode&syscall.S_IFMT == syscall.S_IFDIR)
		}
		end = (end + 7) &^ 7
		if end > len(b) {
			return
		}
		b = b[end:]
	}
}

// forget takes n lookups of id away. More than it holds (a successor's
// table counts lookups approximately: a lookup answered twice, once by
// the dead server and once resent) forgets it.
func (t *kernelTable) forget(id, n uint64) {
	k := t.nodes[id]
	if k == nil {
		return
	}
	if t.j != nil {
		t.j.op(jForget)
		t.j.uvarint(id)
		t.j.uvarint(n)
	}
	if n >= k.Lookups {
		if k.Parent != 0 {
			delete(t.names, nameKey{k.Parent, k.Name})
		}
		delete(t.nodes, id)
		return
	}
	k.Lookups -= n
}

// unname takes a name out of its directory; the node it named stays while
// the kernel holds it.
func (t *kernelTable) unname(k nameKey) {
	if t.j != nil {
		if _, ok := t.names[k]; ok {
			t.j.op(jUnname)
			t.j.uvarint(k.parent)
			t.j.str(k.name)
		}
	}
	t.unnameQuiet(k)
}

func (t *kernelTable) unnameQuiet(k nameKey) {
	if id, ok := t.names[k]; ok {
		delete(t.names, k)
		t.nodes[id].Parent, t.nodes[id].Name = 0, ""
	}
}

// snapshot copies the table.
func (t *kernelTable) snapshot() (map[uint64]KernelNode, map[uint64]KernelHandle) {
	t.mu.Lock()
	defer t.mu.Unlock()
	nodes := make(map[uint64]KernelNode, len(t.nodes))
	for id, n := range t.nodes {
		nodes[id] = *n
	}
	handles := make(map[uint64]KernelHandle, len(t.handles))
	for fh, h := range t.handles {
		handles[fh] = h
	}
	return nodes, handles
}

// load replaces the table with a predecessor's.
func (t *kernelTable) load(nodes map[uint64]KernelNode, handles map[uint64]KernelHandle) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, n := range nodes {
		n := n
		t.nodes[id] = &n
		if n.Parent != 0 {
			t.names[nameKey{n.Parent, n.Name}] = id
		}
	}
	for fh, h := range handles {
		t.handles[fh] = h
	}
	for id := range nodes {
		t.maxID = max(t.maxID, id)
	}
}

// journalTo starts journaling the table (as it is now) to path.
func (t *kernelTable) journalTo(path string, lastIno uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maxID = max(t.maxID, lastIno)
	j, err := openJournal(path, t, t.init)
	if err != nil {
		return err
	}
	t.j = j
	return nil
}

// cleanAll marks every handle fsync'd (and journals it): what was
// written through them is in the store (Leave).
func (t *kernelTable) cleanAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for fh, h := range t.handles {
		if h.Dirty {
			t.dirty(fh, false)
		}
	}
	if t.j != nil {
		t.j.flush(t)
	}
}

// stopJournal ends the journal; remove drops the file too.
func (t *kernelTable) stopJournal(remove bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.j != nil {
		t.j.close(remove)
		t.j = nil
	}
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
