// Package crash proves that volplug survives being killed at every step of
// every mutating operation, and a node's reboot.
//
// The tests build `volplug` with -tags failpoints (internal/failpoint), run
// `volplug csi` over its unix socket on real loop devices, mounts, btrfs
// and a real S3 server, arm one failpoint, and drive a volume's whole life
// as the Kubernetes sidecars and kubelet would. When the point fires the
// driver dies with SIGKILL; the harness restarts it, checks that metadata
// and the kernel agree, retries the RPC that was cut short, carries on to
// the end, and checks that nothing is left over. See ARCHITECTURE.md.
//
// `go test ./test/crash` runs a representative subset; `-args -all`
// (make reliability) runs every case.
package crash
