package mounter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"k8s.io/klog/v2"
)

// Kinds of failure, as the client returns them (wrapped, with the
// mounter's message).
var (
	ErrInvalid  = errors.New("invalid mount request")
	ErrNotFound = errors.New("not mounted")
	ErrConflict = errors.New("something else is mounted there")
	ErrBusy     = errors.New("another call on the same target is in progress")
	// ErrStorage: the storage refused or could not be reached (wrong
	// keys, no such bucket, unreachable endpoint).
	ErrStorage = errors.New("the storage refused the mount")
	ErrTimeout = errors.New("the storage did not answer in time")
	// ErrUnavailable: no mounter answers at the socket.
	ErrUnavailable = errors.New("no mounter answers")
)

// httpError carries a status code from a handler to the client.
type httpError struct {
	code int
	err  error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func badRequest(err error) error { return &httpError{code: http.StatusBadRequest, err: err} }
func notFound(err error) error   { return &httpError{code: http.StatusNotFound, err: err} }
func conflict(err error) error   { return &httpError{code: http.StatusUnprocessableEntity, err: err} }

// kindOf maps a status code back to an error kind.
func kindOf(code int) error {
	switch code {
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusUnprocessableEntity:
		return ErrConflict
	case http.StatusConflict:
		return ErrBusy
	case http.StatusBadGateway:
		return ErrStorage
	case http.StatusGatewayTimeout:
		return ErrTimeout
	}
	return fmt.Errorf("mounter answered %d", code)
}

// handle adapts a call to HTTP: the body in, JSON (or the error's message
// and its status code) out. Errors never carry keys: requests are logged
// and quoted through Request.String.
func (s *Server) handle(call func(ctx context.Context, body []byte) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out, err := call(r.Context(), body)
		if err != nil {
			code := http.StatusInternalServerError
			var he *httpError
			if errors.As(err, &he) {
				code = he.code
			}
			klog.ErrorS(err, "mounter call failed", "path", r.URL.Path)
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if out == nil {
			out = struct{}{}
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}
