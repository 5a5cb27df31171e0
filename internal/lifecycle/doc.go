// Package lifecycle owns the life of a serving process: one process per data directory
// (LockDataDir, an exclusive flock taken before anything in the directory is touched) and one
// owner for the long-running parts (Group): every listener and worker is started through it, a
// listener that stops on its own stops the whole process (the supervisor, systemd or Kubernetes,
// restarts it: a gateway whose DICOM port died must not keep saying it is alive), readiness turns
// off as soon as stopping begins, and every part stops within ONE shutdown deadline that the
// deployment's grace period (systemd TimeoutStopSec, Kubernetes terminationGracePeriodSeconds)
// must exceed.
package lifecycle
