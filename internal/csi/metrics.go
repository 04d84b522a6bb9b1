package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// metrics counts and times every CSI call, by method and gRPC code: the
// numbers an operator alerts on (errors by code, slow stages).
type metrics struct {
	registry *prometheus.Registry
	calls    *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "volplug",
			Name:      "csi_call_duration_seconds",
			Help:      "Duration of CSI calls, by method and gRPC status code.",
			// From a metadata read (sub-millisecond) to a slow format or copy.
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"method", "code"}),
	}
	m.registry.MustRegister(m.calls,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(method string, err error, took time.Duration) {
	m.calls.WithLabelValues(method, status.Code(err).String()).Observe(took.Seconds())
}

// serveMetrics serves /metrics on addr until ctx ends.
func (m *metrics) serve(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "metrics server stopped")
		}
	}()
	klog.InfoS("serving metrics", "address", l.Addr().String())
	return nil
}

// interceptor logs and measures every call.
func (d *Driver) interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := logCalls(ctx, req, info, handler)
	d.metrics.observe(info.FullMethod, err, time.Since(start))
	return resp, err
}
