package bucketfs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"k8s.io/klog/v2"
)

// The kernel table on disk, for a successor after a crash. A graceful
// handover carries the table in memory (handover.go); a SIGKILLed server
// has no chance to, so every change the table takes in is also appended
// to a journal file, before the reply that causes it reaches the kernel.
// One write(2) per request that changes the table, no fsync: what the
// journal must survive is the death of this process, not of the machine
// (a reboot ends the FUSE connection too), and the page cache keeps a
// write of a killed process. The file is rewritten as a snapshot when it
// has grown well past the table it describes.
//
// Records: one opcode byte, then unsigned varints and length-prefixed
// strings. A record cut short (the process died inside write(2), which a
// kill cannot do to a regular file's small write, but a full disk can) ends
// the journal where it starts.

const journalMagic = "volplug-journal-1\n"

// Journal record opcodes.
const (
	jInit    = 'I' // the kernel's INIT request: bytes
	jLastIno = 'L' // the highest node ID given out: id
	jFound   = 'F' // a lookup taken: parent, name, id, dir
	jNode    = 'N' // a node as a snapshot has it: id, parent, name, dir, lookups
	jForget  = 'G' // id, n
	jUnname  = 'U' // parent, name
	jRename  = 'R' // from parent, from name, to parent, to name
	jOpen    = 'H' // fh, node, flags, dir, dirty
	jRelease = 'C' // fh
	jDirty   = 'W' // fh: written since its last fsync
	jSynced  = 'S' // fh: fsync'd
)

// journal appends the table's changes to a file. Its methods run with the
// table's lock held.
type journal struct {
	path    string
	f       *os.File
	buf     []byte
	size    int64 // bytes in the file
	failed  bool  // a write failed: the journal is given up (crash recovery is off)
	compact int64 // rewrite once the file is this large
}

const journalMinCompact = 1 << 20

// openJournal starts a journal at path (0600) holding the table t as it is.
func openJournal(path string, t *kernelTable, init []byte) (*journal, error) {
	j := &journal{path: path}
	if err := j.rewrite(t, init); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *journal) uvarint(v uint64) { j.buf = binary.AppendUvarint(j.buf, v) }
func (j *journal) str(s string)     { j.uvarint(uint64(len(s))); j.buf = append(j.buf, s...) }
func (j *journal) op(c byte)        { j.buf = append(j.buf, c) }
func bit(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// flush writes what the current request changed, in one write(2).
func (j *journal) flush(t *kernelTable) {
	if len(j.buf) == 0 || j.failed {
		j.buf = j.buf[:0]
		return
	}
	n, err := j.f.Write(j.buf)
	j.size += int64(n)
	j.buf = j.buf[:0]
	if err != nil {
		j.fail(err)
		return
	}
	if j.size > j.compact {
		if err := j.rewrite(t, t.init); err != nil {
			j.fail(err)
		}
	}
}

func (j *journal) fail(err error) {
	klog.ErrorS(err, "bucketfs: journal write failed: a crash of this server will end its mount", "path", j.path)
	j.failed = true
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
	os.Remove(j.path) // stale: a successor must not trust it
}

// rewrite replaces the file with a snapshot of t.
func (j *journal) rewrite(t *kernelTable, init []byte) error {
	j.buf = append(j.buf[:0], journalMagic...)
	if init != nil {
		j.op(jInit)
		j.str(string(init))
	}
	j.op(jLastIno)
	j.uvarint(t.maxID)
	ids := make([]uint64, 0, len(t.nodes))
	for id := range t.nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, id := range ids {
		n := t.nodes[id]
		j.op(jNode)
		j.uvarint(id)
		j.uvarint(n.Parent)
		j.str(n.Name)
		j.uvarint(bit(n.Dir))
		j.uvarint(n.Lookups)
	}
	for fh, h := range t.handles {
		j.openRecord(fh, h)
	}
	tmp, err := os.CreateTemp(filepath.Dir(j.path), ".journal-")
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if _, err := tmp.Write(j.buf); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("journal: %w", err)
	}
	if err := os.Rename(tmp.Name(), j.path); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("journal: %w", err)
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.size = tmp, int64(len(j.buf))
	j.compact = max(journalMinCompact, 4*j.size)
	j.buf = j.buf[:0]
	return nil
}

func (j *journal) openRecord(fh uint64, h KernelHandle) {
	j.op(jOpen)
	j.uvarint(fh)
	j.uvarint(h.Node)
	j.uvarint(uint64(h.Flags))
	j.uvarint(bit(h.Dir))
	j.uvarint(bit(h.Dirty))
}

// close stops journaling and removes the file (the mount is gone, or
// handed over, and the successor keeps its own).
func (j *journal) close(remove bool) {
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
	if remove {
		os.Remove(j.path)
	}
}

// ReadJournal rebuilds the state a crashed server left at path: the INIT
// request, the node table, the handles (Dirty: written and not fsync'd
// when it died) and the highest node ID. Files (sizes) and usage are not
// in it: the successor asks the store (Recover).
func ReadJournal(path string) (*State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	magic := make([]byte, len(journalMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != journalMagic {
		return nil, fmt.Errorf("journal %s: not a journal", path)
	}
	t := newKernelTable()
	var init []byte
	rd := journalReader{r: r}
	for {
		c, err := r.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("journal %s: %w", path, err)
		}
		if !rd.apply(c, t, &init) {
			if rd.err != nil && !errors.Is(rd.err, io.ErrUnexpectedEOF) && !errors.Is(rd.err, io.EOF) {
				return nil, fmt.Errorf("journal %s: %w", path, rd.err)
			}
			break // a record cut short: the end
		}
	}
	if init == nil {
		return nil, fmt.Errorf("journal %s: no INIT request (the kernel never spoke to the server)", path)
	}
	nodes, handles := t.snapshot()
	return &State{Init: init, Nodes: nodes, Handles: handles, LastIno: t.maxID}, nil
}

type journalReader struct {
	r   *bufio.Reader
	err error
}

func (rd *journalReader) uvarint() uint64 {
	if rd.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(rd.r)
	if err != nil {
		rd.err = io.ErrUnexpectedEOF
	}
	return v
}

func (rd *journalReader) str() string {
	n := rd.uvarint()
	if rd.err != nil {
		return ""
	}
	if n > 1<<20 {
		rd.err = fmt.Errorf("a string of %d bytes", n)
		return ""
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rd.r, b); err != nil {
		rd.err = io.ErrUnexpectedEOF
	}
	return string(b)
}

// apply reads the record of opcode c into t; false at the end or on a bad
// record.
func (rd *journalReader) apply(c byte, t *kernelTable, init *[]byte) bool {
	switch c {
	case jInit:
		s := rd.str()
		if rd.err == nil {
			*init = []byte(s)
		}
	case jLastIno:
		id := rd.uvarint()
		if rd.err == nil {
			t.maxID = max(t.maxID, id)
		}
	case jFound:
		parent, name, id, dir := rd.uvarint(), rd.str(), rd.uvarint(), rd.uvarint()
		if rd.err == nil {
			t.found(parent, name, id, dir == 1)
		}
	case jNode:
		id, parent, name, dir, lookups := rd.uvarint(), rd.uvarint(), rd.str(), rd.uvarint(), rd.uvarint()
		if rd.err == nil {
			t.found(parent, name, id, dir == 1)
			t.nodes[id].Lookups = lookups
		}
	case jForget:
		id, n := rd.uvarint(), rd.uvarint()
		if rd.err == nil {
			t.forget(id, n)
		}
	case jUnname:
		parent, name := rd.uvarint(), rd.str()
		if rd.err == nil {
			t.unname(nameKey{parent, name})
		}
	case jRename:
		fp, fn, tp, tn := rd.uvarint(), rd.str(), rd.uvarint(), rd.str()
		if rd.err == nil {
			t.rename(nameKey{fp, fn}, nameKey{tp, tn})
		}
	case jOpen:
		fh, node, flags, dir, dirty := rd.uvarint(), rd.uvarint(), rd.uvarint(), rd.uvarint(), rd.uvarint()
		if rd.err == nil {
			t.handles[fh] = KernelHandle{Node: node, Flags: uint32(flags), Dir: dir == 1, Dirty: dirty == 1}
		}
	case jRelease:
		fh := rd.uvarint()
		if rd.err == nil {
			delete(t.handles, fh)
		}
	case jDirty, jSynced:
		fh := rd.uvarint()
		if h, ok := t.handles[fh]; ok && rd.err == nil {
			h.Dirty = c == jDirty
			t.handles[fh] = h
		}
	default:
		rd.err = fmt.Errorf("unknown record %q", c)
	}
	return rd.err == nil
}
