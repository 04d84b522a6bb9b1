package csi

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/csirpc"
)

// Listen opens the endpoint: unix:///path/csi.sock (or a bare path) or
// tcp://host:port. A stale socket file from an earlier run is removed, but
// only if it is a socket: Listen never deletes a file it did not make.
func Listen(endpoint string) (net.Listener, error) {
	network, addr, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if fi, err := os.Lstat(addr); err == nil {
			if fi.Mode()&os.ModeSocket == 0 {
				return nil, fmt.Errorf("endpoint %s exists and is not a socket", addr)
			}
			if err := os.Remove(addr); err != nil {
				return nil, fmt.Errorf("remove stale socket: %w", err)
			}
		}
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", endpoint, err)
	}
	return l, nil
}

// ParseEndpoint splits a CSI endpoint into a network and an address.
func ParseEndpoint(endpoint string) (network, addr string, err error) {
	if strings.HasPrefix(endpoint, "/") {
		return "unix", endpoint, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", "", fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if u.Host != "" { // unix://relative/path
			path = u.Host + u.Path
		}
		if path == "" {
			return "", "", fmt.Errorf("endpoint %q has no socket path", endpoint)
		}
		return "unix", path, nil
	case "tcp":
		if u.Host == "" {
			return "", "", fmt.Errorf("endpoint %q has no host:port", endpoint)
		}
		return "tcp", u.Host, nil
	}
	return "", "", fmt.Errorf("endpoint %q: use unix:///path or tcp://host:port", endpoint)
}

// Serve serves the driver's services on l until ctx is cancelled, then
// stops gracefully: calls in flight finish (up to 30 s), so no half-done
// mount is left behind by a stop.
func (d *Driver) Serve(ctx context.Context, l net.Listener) error {
	if d.opts.MetricsAddress != "" {
		if err := d.metrics.serve(ctx, d.opts.MetricsAddress); err != nil {
			return err
		}
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.interceptor))
	csi.RegisterIdentityServer(srv, &identityServer{d: d})
	if d.servesController() {
		csi.RegisterControllerServer(srv, &controllerServer{d: d})
		if d.backend.Capabilities().GroupSnapshots {
			csi.RegisterGroupControllerServer(srv, &groupControllerServer{d: d})
		}
	}
	if d.servesNode() {
		csi.RegisterNodeServer(srv, &nodeServer{d: d})
	}
	klog.InfoS("serving CSI", "driver", d.opts.Name, "mode", d.opts.Mode, "node", d.opts.NodeID,
		"endpoint", l.Addr().String(), "attach", d.opts.EnableAttach)

	return csirpc.Serve(ctx, srv, l)
}

// logCalls logs every call, secrets stripped (csirpc.LogCalls).
func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return csirpc.LogCalls(ctx, req, info, handler)
}
