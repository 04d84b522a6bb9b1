package csi

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/backend"
)

// toStatus turns a backend error into the gRPC status a CO acts on. An
// error that already is a status passes through unchanged.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, backend.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, backend.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, backend.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, backend.ErrOutOfRange):
		code = codes.OutOfRange
	case errors.Is(err, backend.ErrNoSpace), errors.Is(err, backend.ErrLimit):
		code = codes.ResourceExhausted
	case errors.Is(err, backend.ErrInUse), errors.Is(err, backend.ErrPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, backend.ErrUnsupported):
		code = codes.Unimplemented
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}
