package mounter

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// fdConn carries JSON messages over a unix stream socket, each with at
// most one file descriptor (SCM_RIGHTS): how a /dev/fuse fd moves between
// processes with the state to serve it.
type fdConn struct {
	c *net.UnixConn
}

// send writes v, and f's descriptor if f is not nil. The descriptor rides
// on the message's first bytes: a length and a flag.
func (fc fdConn) send(v any, f *os.File) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	hdr := make([]byte, 5)
	binary.BigEndian.PutUint32(hdr, uint32(len(body)))
	var oob []byte
	if f != nil {
		hdr[4] = 1
		oob = unix.UnixRights(int(f.Fd()))
	}
	if _, _, err := fc.c.WriteMsgUnix(hdr, oob, nil); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if _, err := fc.c.Write(body); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// recv reads a message into v and returns the descriptor that came with
// it, if any (the caller owns it).
func (fc fdConn) recv(v any) (*os.File, error) {
	hdr := make([]byte, 5)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := fc.c.ReadMsgUnix(hdr, oob)
	if err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}
	var f *os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				if f == nil {
					f = os.NewFile(uintptr(fd), "received")
				} else {
					unix.Close(fd) // one per message; more is a confused sender
				}
			}
		}
	}
	if n < len(hdr) {
		if _, err := io.ReadFull(fc.c, hdr[n:]); err != nil {
			closeFile(f)
			return nil, fmt.Errorf("receive: %w", err)
		}
	}
	if (hdr[4] == 1) != (f != nil) {
		closeFile(f)
		return nil, fmt.Errorf("receive: descriptor expected %v, got %v", hdr[4] == 1, f != nil)
	}
	size := binary.BigEndian.Uint32(hdr)
	if size > 256<<20 {
		closeFile(f)
		return nil, fmt.Errorf("receive: message of %d bytes", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(fc.c, body); err != nil {
		closeFile(f)
		return nil, fmt.Errorf("receive: %w", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		closeFile(f)
		return nil, fmt.Errorf("receive: %w", err)
	}
	return f, nil
}

func closeFile(f *os.File) {
	if f != nil {
		f.Close()
	}
}
