package bucketfs

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// request and reply bytes as they cross /dev/fuse.
func fuseReq(op uint32, node uint64, args []byte) []byte {
	b := make([]byte, inHeaderSize+len(args))
	h := (*fuse.InHeader)(unsafe.Pointer(&b[0]))
	h.Length, h.Opcode, h.NodeId, h.Unique = uint32(len(b)), op, node, 2
	copy(b[inHeaderSize:], args)
	return b
}

func fuseEntryReply(id uint64, dir bool, extra []byte) []byte {
	b := make([]byte, outHeaderSize+entryOutSize+len(extra))
	e := (*fuse.EntryOut)(unsafe.Pointer(&b[outHeaderSize]))
	e.NodeId, e.Mode = id, syscall.S_IFREG
	if dir {
		e.Mode = syscall.S_IFDIR
	}
	copy(b[outHeaderSize+entryOutSize:], extra)
	return b
}

func u64(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// lookup is a LOOKUP of name in parent answered with id.
func lookup(t *kernelTable, parent uint64, name string, id uint64, dir bool) {
	t.observe(fuseReq(opLookup, parent, append([]byte(name), 0)), fuseEntryReply(id, dir, nil))
}

// What a journal says after a run of requests is the table a live server
// has, whatever was compacted on the way.
func TestJournalRebuildsTheTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	tab := newKernelTable()
	if err := tab.journalTo(path, 0); err != nil {
		t.Fatal(err)
	}
	tab.setInit([]byte("init request"))
	tab.j.compact = 200 // compact often
	for i := uint64(0); i < 50; i++ {
		lookup(tab, 1, "d", 2, true)
		lookup(tab, 2, "f"+string(rune('a'+i%26)), 10+i, false)
	}
	tab.observe(fuseReq(opForget, 12, u64(1)), nil)
	// CREATE in 2: open flags, mode, then the name; the reply an entry and a handle.
	create := append(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, syscall.O_WRONLY|syscall.O_CREAT), 0o644), make([]byte, 8)...)
	tab.observe(fuseReq(opCreate, 2, append(create, "new\x00"...)), fuseEntryReply(100, false, u64(7, 0)))
	tab.observe(fuseReq(opWrite, 100, u64(7, 0)), make([]byte, outHeaderSize+8))
	tab.observe(fuseReq(opOpen, 11, u64(0)), append(make([]byte, outHeaderSize), u64(8, 0)...))
	tab.observe(fuseReq(opRelease, 11, u64(8)), nil)
	tab.observe(fuseReq(opRename, 2, append(u64(1), "fb\x00moved\x00"...)), make([]byte, outHeaderSize))
	tab.observe(fuseReq(opUnlink, 2, []byte("fc\x00")), make([]byte, outHeaderSize))

	st, err := ReadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	nodes, handles := tab.snapshot()
	if !reflect.DeepEqual(st.Nodes, nodes) || !reflect.DeepEqual(st.Handles, handles) {
		t.Errorf("journal:\n%v\n%v\nlive:\n%v\n%v", st.Nodes, st.Handles, nodes, handles)
	}
	if !handles[7].Dirty {
		t.Errorf("handle 7 wrote and was not fsync'd: %+v", handles[7])
	}
	if string(st.Init) != "init request" || st.LastIno != 100 {
		t.Errorf("init %q, last ino %d", st.Init, st.LastIno)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("journal file: %v %v, want 0600", fi.Mode(), err)
	}
	// A record cut short ends the journal there.
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(data, jFound, 5), 0o600); err != nil {
		t.Fatal(err)
	}
	if st2, err := ReadJournal(path); err != nil || !reflect.DeepEqual(st2.Nodes, nodes) {
		t.Errorf("a torn record: %v", err)
	}
	tab.stopJournal(true)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the journal of an unmounted mount is left: %v", err)
	}
}

// What journaling costs a LOOKUP (the most frequent request that changes
// the table): compare with and without.
func BenchmarkJournalLookup(b *testing.B) {
	for _, journaled := range []bool{false, true} {
		name := "plain"
		if journaled {
			name = "journaled"
		}
		b.Run(name, func(b *testing.B) {
			tab := newKernelTable()
			if journaled {
				if err := tab.journalTo(filepath.Join(b.TempDir(), "journal"), 0); err != nil {
					b.Fatal(err)
				}
				defer tab.stopJournal(true)
			}
			req := fuseReq(opLookup, 1, []byte("some-file-name.dat\x00"))
			reply := fuseEntryReply(2, false, nil)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tab.observe(req, reply)
			}
		})
	}
}

// A journal is this package's own file (0600), but a successor must not
// crash on a damaged one: ReadJournal fails or returns a table.
func FuzzReadJournal(f *testing.F) {
	f.Add([]byte(journalMagic + "I\x04initL\x05F\x01\x01a\x02\x00H\x07\x02\x01\x00\x01"))
	f.Add([]byte(journalMagic + "N\x02\x01\x01d\x01\x03R\x01\x01d\x01\x01e"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "journal")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = ReadJournal(path)
	})
}
