package flex

import "testing"

// FuzzDecodeResult: a driver's output never panics the caller, and an
// accepted result has a status the protocol names.
func FuzzDecodeResult(f *testing.F) {
	for _, s := range []string{`{"status":"Success"}`, `{"status":"Failure","message":"x","code":"NOT_FOUND"}`, `log line {"status":"Success"}`, `{"status":"Maybe"}`, `null`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		res, err := DecodeResult(out)
		if err != nil {
			return
		}
		switch res.Status {
		case StatusSuccess, StatusFailure, StatusNotSupported:
		default:
			t.Fatalf("status %q accepted from %q", res.Status, out)
		}
	})
}
