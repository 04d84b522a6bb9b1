package ctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Endpoint is a parsed CSI endpoint: a network ("unix" or "tcp") and an
// address in the form net.Dial takes for that network.
type Endpoint struct {
	Network string
	Address string
}

func (e Endpoint) String() string {
	if e.Network == "unix" {
		return "unix://" + e.Address
	}
	return e.Network + "://" + e.Address
}

// ParseEndpoint accepts every spelling of an endpoint that CSI tools use:
// unix:///abs/path, unix://rel/path, unix:path, /abs/path, ./rel/path,
// tcp://host:port and host:port. A bare word without a port is taken as a
// socket path, because that is what csc does and a socket file in the
// current directory is the more common case than a host name without port.
func ParseEndpoint(endpoint string) (Endpoint, error) {
	ep := strings.TrimSpace(endpoint)
	if ep == "" {
		return Endpoint{}, errors.New("no CSI endpoint: set -e/--endpoint or $CSI_ENDPOINT")
	}
	scheme, rest, hasScheme := strings.Cut(ep, "://")
	if hasScheme {
		switch strings.ToLower(scheme) {
		case "unix":
			// unix:///abs keeps its leading slash; unix://rel stays relative.
			if rest == "" {
				return Endpoint{}, fmt.Errorf("endpoint %q: empty socket path", endpoint)
			}
			return Endpoint{Network: "unix", Address: rest}, nil
		case "tcp", "tcp4", "tcp6":
			if err := checkHostPort(rest); err != nil {
				return Endpoint{}, fmt.Errorf("endpoint %q: %w", endpoint, err)
			}
			return Endpoint{Network: "tcp", Address: rest}, nil
		default:
			return Endpoint{}, fmt.Errorf("endpoint %q: unsupported scheme %q (want unix or tcp)", endpoint, scheme)
		}
	}
	if p, ok := strings.CutPrefix(ep, "unix:"); ok {
		if p == "" {
			return Endpoint{}, fmt.Errorf("endpoint %q: empty socket path", endpoint)
		}
		return Endpoint{Network: "unix", Address: p}, nil
	}
	if !strings.Contains(ep, "/") && checkHostPort(ep) == nil {
		return Endpoint{Network: "tcp", Address: ep}, nil
	}
	return Endpoint{Network: "unix", Address: ep}, nil
}

// checkHostPort accepts host:port with a numeric port; the host may be empty
// (":10000"), which net.Dial reads as the local machine.
func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// Dial connects to a CSI endpoint. It makes one plain connection first so
// that a missing socket or a refused port fails here with the kernel's own
// words, rather than as an RPC timing out later; gRPC then keeps its own
// connection. The caller closes the returned conn.
func Dial(ctx context.Context, endpoint string) (*grpc.ClientConn, error) {
	ep, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	probe, err := d.DialContext(ctx, ep.Network, ep.Address)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", ep, err)
	}
	_ = probe.Close()

	dialer := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, ep.Network, ep.Address)
	}
	// passthrough hands our address straight to the dialer, so no resolver
	// ever tries to interpret a socket path as a host name. The authority
	// is fixed to localhost because a path is not a valid :authority.
	conn, err := grpc.NewClient("passthrough:///csi",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialer),
		grpc.WithAuthority("localhost"),
	)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", ep, err)
	}
	conn.Connect()
	return conn, nil
}
