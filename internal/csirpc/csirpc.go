// Package csirpc is what every volplug CSI server does at its gRPC
// boundary, whatever sits behind it: validate requests, let one operation
// at a time work on a volume, map errors to the gRPC codes the CSI spec
// names, and log calls without their secrets. `volplug csi` (a backend
// behind it) and `volplug adapt` (a FlexVolume executable behind it) share
// it, so the two front doors answer the same request the same way.
package csirpc

import (
	"context"
	"errors"
	"net"
	"regexp"
	"time"

	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/backend"
)

// DriverName is the rule csi-sanity and Kubernetes apply to driver names.
var DriverName = regexp.MustCompile(`^[a-zA-Z][A-Za-z0-9-._]{0,61}[a-zA-Z]$`)

// Status turns an error into the gRPC status a CO acts on: a backend error
// kind (backend.Err*) or a context error picks the code. An error that
// already is a status passes through unchanged.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(Code(err), err.Error())
}

// Code is the gRPC code for an error's kind; Internal when it has none.
func Code(err error) codes.Code {
	if s, ok := status.FromError(err); ok && err != nil {
		return s.Code()
	}
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, backend.ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, backend.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, backend.ErrOutOfRange):
		return codes.OutOfRange
	case errors.Is(err, backend.ErrNoSpace), errors.Is(err, backend.ErrLimit):
		return codes.ResourceExhausted
	case errors.Is(err, backend.ErrInUse), errors.Is(err, backend.ErrPrecondition):
		return codes.FailedPrecondition
	case errors.Is(err, backend.ErrUnsupported):
		return codes.Unimplemented
	case errors.Is(err, backend.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Internal
}

// Invalid is an InvalidArgument status.
func Invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// LogCalls logs every call with its duration, and every error; requests are
// logged with their secrets stripped (protosanitizer), so secrets never
// reach a log.
func LogCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	klog.V(4).InfoS("call", "method", info.FullMethod, "request", protosanitizer.StripSecrets(req))
	resp, err := handler(ctx, req)
	if err != nil {
		klog.ErrorS(nil, "call failed", "method", info.FullMethod, "code", status.Code(err),
			"error", status.Convert(err).Message(), "duration", time.Since(start))
	} else {
		klog.V(2).InfoS("call done", "method", info.FullMethod, "duration", time.Since(start))
	}
	return resp, err
}

// codeNames spell the codes as the CSI spec and gRPC's JSON form do.
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
	codes.Unauthenticated: "UNAUTHENTICATED",
}

// CodeName spells c as the CSI spec does, e.g. NOT_FOUND.
func CodeName(c codes.Code) string { return codeNames[c] }

// ParseCode reads a code spelled as CodeName spells it.
func ParseCode(name string) (codes.Code, bool) {
	for c, n := range codeNames {
		if n == name {
			return c, true
		}
	}
	return codes.Unknown, false
}

// Serve runs srv on l until ctx is cancelled, then stops gracefully: calls
// in flight get up to 30 s to finish, so no half-done mount is left, and
// then the rest are cut off.
func Serve(ctx context.Context, srv *grpc.Server, l net.Listener) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		srv.Stop()
	}
	if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
