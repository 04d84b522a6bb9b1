package csi

import "github.com/volplug/volplug/internal/csirpc"

// toStatus turns a backend error into the gRPC status a CO acts on
// (csirpc.Status: the one mapping both CSI front doors use).
func toStatus(err error) error { return csirpc.Status(err) }

func invalid(format string, args ...any) error { return csirpc.Invalid(format, args...) }
