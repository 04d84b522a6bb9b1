package mounter_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// load is what a pod does on a mount while its mounter is upgraded or
// killed: a writer creates, writes, fsyncs and closes file after file, and
// a reader keeps one file open, reads it round and round and lists the
// directory. Every syscall must succeed; with allowEIO, a write whose data
// died with a killed mounter may fail with EIO (the file is then skipped).
type load struct {
	target   string
	allowEIO bool
	big      []byte
	rf       *os.File
	stop     atomic.Bool
	wg       sync.WaitGroup
	eio      atomic.Int32
	mu       sync.Mutex
	failures []error
	written  map[string][]byte // fsync'd and closed without an error
}

func startLoad(t *testing.T, target string, allowEIO bool) *load {
	t.Helper()
	l := &load{target: target, allowEIO: allowEIO, written: map[string][]byte{},
		big: bytes.Repeat([]byte("0123456789abcdef"), 1<<16)} // 1 MiB
	if err := os.WriteFile(filepath.Join(target, "big"), l.big, 0o644); err != nil {
		t.Fatal(err)
	}
	rf, err := os.Open(filepath.Join(target, "big"))
	if err != nil {
		t.Fatal(err)
	}
	l.rf = rf // closed by close, which a test defers before it unmounts
	l.wg.Add(2)
	go l.write()
	go l.read()
	return l
}

func (l *load) fail(err error) { l.mu.Lock(); l.failures = append(l.failures, err); l.mu.Unlock() }

func (l *load) write() {
	defer l.wg.Done()
	for i := 0; !l.stop.Load(); i++ {
		name := fmt.Sprintf("f%04d", i)
		data := []byte(fmt.Sprintf("file %d %s", i, bytes.Repeat([]byte{'y'}, i%3000)))
		f, err := os.Create(filepath.Join(l.target, name))
		if err == nil {
			_, err = f.Write(data)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if l.allowEIO && errors.Is(err, syscall.EIO) {
			l.eio.Add(1) // its data died with the mounter: written again under a new name
			continue
		}
		if err != nil {
			l.fail(fmt.Errorf("write %s: %w", name, err))
			return
		}
		l.mu.Lock()
		l.written[name] = data
		l.mu.Unlock()
	}
}

func (l *load) read() {
	defer l.wg.Done()
	buf := make([]byte, 128<<10)
	for off := int64(0); !l.stop.Load(); off = (off + int64(len(buf))) % int64(len(l.big)) {
		if n, err := l.rf.ReadAt(buf, off); err != nil || !bytes.Equal(buf[:n], l.big[off:off+int64(n)]) {
			l.fail(fmt.Errorf("read at %d: %d %v", off, n, err))
			return
		}
		if _, err := os.ReadDir(l.target); err != nil {
			l.fail(fmt.Errorf("readdir: %w", err))
			return
		}
	}
}

// close stops the load and closes the reader's file, which would keep the
// mount busy. A test defers it (it may run again after finish).
func (l *load) close() {
	l.stop.Store(true)
	l.wg.Wait()
	l.rf.Close()
}

// finish stops the load, reports every failed syscall, and checks that
// each file written is byte for byte in the bucket's backing directory. It
// returns the number of files and of EIOs.
func (l *load) finish(t *testing.T, bucketDir string) (files, eios int) {
	t.Helper()
	l.close()
	for _, err := range l.failures {
		t.Error(err)
	}
	if len(l.written) == 0 {
		t.Fatal("nothing was written")
	}
	for name, data := range l.written {
		got, err := os.ReadFile(filepath.Join(bucketDir, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s in the bucket: %v", name, err)
		}
	}
	return len(l.written), int(l.eio.Load())
}
