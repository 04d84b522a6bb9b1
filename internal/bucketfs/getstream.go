package bucketfs

import (
	"context"
)

// getStream reads the rest of an object for a sustained sequential reader:
// parts of ReadAheadMax bytes, each a ranged GET, fetched ahead of the
// reader (ReadParallel at once) and handed over in order. More parts in
// flight pay where one connection's pace is the bound (a client alone on a
// loopback versitygw read 1.5-2x faster with four); through the mounter on
// 2 cores the CPU shared by server, kernel and mounter is the bound, and
// one at a time won.
//
// Memory is bounded twice: a stream has its own two buffers (one the
// reader holds, one being fetched), and borrows up to ReadParallel-1 more
// from a budget of the whole mount (readSlots), so many files read at once
// share it instead of each holding ReadParallel parts.
type getStream struct {
	next     int64         // the offset of the next part the reader will take
	parts    chan *fetch   // fetches in file order, started or done
	free     chan []byte   // buffers for the next fetches
	borrowed int           // slots of the mount's budget this stream holds
	slots    chan struct{} // the mount's budget, to give borrowed back
	cancel   context.CancelFunc
}

func startGetStream(b *bfs, key string, off, size int64) *getStream {
	partSize := b.cfg.ReadAheadMax
	borrowed := 0
	for borrowed < b.cfg.ReadParallel-1 {
		select {
		case b.readSlots <- struct{}{}:
			borrowed++
			continue
		default:
		}
		break
	}
	// inFlight parts may be fetched while the reader holds one more.
	inFlight := 1 + borrowed
	ctx, cancel := context.WithCancel(context.Background())
	st := &getStream{
		next: off, parts: make(chan *fetch, inFlight), free: make(chan []byte, inFlight+1),
		borrowed: borrowed, slots: b.readSlots, cancel: cancel,
	}
	for range inFlight + 1 {
		st.free <- make([]byte, partSize)
	}
	go st.fill(ctx, b.st, key, off, size, partSize)
	return st
}

// fill starts a fetch per part as soon as a buffer is free, and queues it
// for the reader in order. Parts are cut where the object ended when the
// stream began; a part that comes back short means the object shrank, and
// the stream ends after it.
func (st *getStream) fill(ctx context.Context, s *store, key string, off, size, partSize int64) {
	defer close(st.parts)
	for off < size {
		var buf []byte
		select {
		case buf = <-st.free:
		case <-ctx.Done():
			return
		}
		f := &fetch{off: off, length: min(partSize, size-off), done: make(chan struct{})}
		go func() {
			defer close(f.done)
			f.data, f.err = s.get(ctx, key, f.off, f.length, buf)
		}()
		select {
		case st.parts <- f:
		case <-ctx.Done():
			return
		}
		off += f.length
	}
}

// take waits for the part at st.next. ok is false when the stream has
// ended, failed or met a short part: the caller falls back to ranged GETs
// (a short part's data is still handed over first).
func (st *getStream) take(ctx context.Context) (c chunk, ok bool, interrupted bool) {
	var f *fetch
	select {
	case f, ok = <-st.parts:
	case <-ctx.Done():
		return chunk{}, false, true
	}
	if !ok {
		return chunk{}, false, false
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return chunk{}, false, true
	}
	if f.err != nil || len(f.data) == 0 {
		return chunk{}, false, false
	}
	st.next = f.off + int64(len(f.data))
	if int64(len(f.data)) < f.length {
		st.next = -1 // shrank: nothing after this part comes from the stream
	}
	return chunk{off: f.off, data: f.data}, true, false
}

type chunk struct {
	off  int64
	data []byte
}

// recycle hands a part's buffer back for the next fetch.
func (st *getStream) recycle(buf []byte) {
	select {
	case st.free <- buf[:cap(buf)]:
	default:
	}
}

// stop cancels the fetches in flight and gives the borrowed budget back.
// Buffers still being written by a cancelled GET are left to the GC.
func (st *getStream) stop() {
	st.cancel()
	for range st.borrowed {
		<-st.slots
	}
	st.borrowed = 0
}
