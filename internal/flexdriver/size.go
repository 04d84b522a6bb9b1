package flexdriver

import (
	"fmt"
	"math"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/volplug/volplug/internal/backend"
)

// parseSize reads a size as Kubernetes writes quantities ("1Gi", "1.5G",
// "1073741824") into bytes, rounding a fraction of a byte up; "" is 0 (the
// backend's default).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	// ParseQuantity takes a bare suffix ("Gi") as zero; a size needs a number.
	if err != nil || q.Sign() < 0 || !strings.ContainsAny(s[:1], "0123456789.") {
		return 0, fmt.Errorf("%q is not a size like 1Gi, 500M or 1073741824: %w", s, backend.ErrInvalid)
	}
	// Value() of a quantity past int64 is not always MaxInt64 (1e19
	// gives 0), so compare first.
	if q.CmpInt64(math.MaxInt64) >= 0 {
		return 0, fmt.Errorf("%q is too large: %w", s, backend.ErrInvalid)
	}
	n := q.Value() // rounds up
	return n, nil
}
