package mounter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Client calls a mounter over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the mounter at socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

// Mount asks for req's mount (idempotent).
func (c *Client) Mount(ctx context.Context, req *Request) error {
	return c.call(ctx, http.MethodPost, "/v1/mount", req, nil)
}

// Unmount asks for the mount at target to go (idempotent).
func (c *Client) Unmount(ctx context.Context, target string) error {
	return c.call(ctx, http.MethodPost, "/v1/unmount", map[string]string{"Target": target}, nil)
}

// Repair mounts again a mount of the mounter's whose server died.
func (c *Client) Repair(ctx context.Context, target string) error {
	return c.call(ctx, http.MethodPost, "/v1/repair", map[string]string{"Target": target}, nil)
}

// SetCapacity changes the quota of the mount at target.
func (c *Client) SetCapacity(ctx context.Context, target string, bytes int64) error {
	return c.call(ctx, http.MethodPost, "/v1/capacity", map[string]any{"Target": target, "Bytes": bytes}, nil)
}

// List returns the mounter's mounts.
func (c *Client) List(ctx context.Context) ([]Status, error) {
	var out []Status
	err := c.call(ctx, http.MethodGet, "/v1/mounts", nil, &out)
	return out, err
}

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://mounter"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("mounter at %s: %w", c.socket, ctx.Err())
		}
		return fmt.Errorf("mounter at %s: %w: %v", c.socket, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("mounter at %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mounter: %s: %w", strings.TrimSpace(string(data)), kindOf(resp.StatusCode))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// EnsureRunning makes sure a mounter answers at the socket: when none
// does, it starts `exe mounter --socket ... --state-dir ... --detach` and
// waits until the new one answers. The detached mounter runs in a session
// of its own, is no child of the caller (so it outlives it, and a signal
// to the caller's process group does not reach it), and logs to logFile.
func (c *Client) EnsureRunning(ctx context.Context, exe, stateDir, logFile string) error {
	if _, err := c.List(ctx); !errors.Is(err, ErrUnavailable) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(logFile), 0o700); err != nil {
		return fmt.Errorf("start a mounter: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe, "mounter", "--socket", c.socket, "--state-dir", stateDir,
		"--log-file", logFile, "--detach")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start a mounter: %w: %s", err, bytes.TrimSpace(out))
	}
	for {
		_, err := c.List(ctx)
		if !errors.Is(err, ErrUnavailable) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start a mounter: it does not answer at %s: %w", c.socket, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
