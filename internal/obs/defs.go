package obs

import (
	"runtime"
	"sync/atomic"
)

// Default is the registry the gateway serves on /metrics; the project's metrics below live in it.
var Default = NewRegistry()

// Rejection reasons: the values of the "reason" label of RejectionsTotal. They are fixed here so
// that dashboards and alerts can rely on them; add new ones here rather than inventing strings at
// the call site.
const (
	RejectCalledAEUnknown     = "called_ae_unknown"       // A-ASSOCIATE-RJ: called AE not recognised
	RejectCallingAENotAllowed = "calling_ae_not_allowed"  // A-ASSOCIATE-RJ: calling AE not on the allow-list
	RejectHostNotAllowed      = "host_not_allowed"        // connection closed: peer address not on the allow-list
	RejectTooManyAssociations = "too_many_associations"   // A-ASSOCIATE-RJ (transient): association limit reached
	RejectTooManyPending      = "too_many_pending"        // connection closed: too many not yet admitted (per host or in all)
	RejectDiskLow             = "disk_low"                // refused: free space below the watermark ("out of resources")
	RejectNoPresentationCtx   = "no_presentation_context" // no proposed context was acceptable
	RejectProtocolError       = "protocol_error"          // malformed PDU or DIMSE: A-ABORT
	RejectPDUTooLarge         = "pdu_too_large"           // PDU over the negotiated maximum: A-ABORT
	RejectInstanceTooLarge    = "instance_too_large"      // C-STORE refused with Out of Resources
	RejectInstanceInvalid     = "instance_invalid"        // C-STORE failed: the dataset could not be read
	RejectTLSHandshake        = "tls_handshake"           // TLS handshake failed (e.g. no or untrusted client certificate)
)

// Study pipeline stages: the values of the "stage" label of StudyStageSeconds.
const (
	StageReceive = "receive" // first instance received -> study complete (includes the quiet window)
	StageInfer   = "infer"   // study-complete event consumed -> SEG objects written
	StageExport  = "export"  // SEG objects written -> acknowledged by every destination
)

// Association outcomes: the values of the "outcome" label of AssociationsTotal.
const (
	OutcomeAccepted = "accepted"
	OutcomeRejected = "rejected"
)

// Latency buckets in seconds. Receiving a study spans the quiet window (tens of seconds) and large
// series; inference of one series is sub-second to tens of seconds on a CPU.
var (
	StudyStageBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
	InferenceBuckets  = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
)

// The project's metrics. Components increment them directly, e.g.
//
//	obs.AssociationsActive.Inc(); defer obs.AssociationsActive.Dec()
//	obs.RejectionsTotal.With(obs.RejectCallingAENotAllowed).Inc()
//	obs.StudyStageSeconds.With(obs.StageInfer).ObserveSince(start)
//	obs.QueueDepth.Set(func() float64 { return float64(pending()) }, "study_complete")
var (
	AssociationsActive = Default.NewGauge("dpersona_associations_active",
		"DICOM associations currently open.")
	AssociationsTotal = Default.NewCounterVec("dpersona_associations_total",
		"DICOM associations requested, by outcome (accepted, rejected).", "outcome")
	InstancesReceived = Default.NewCounter("dpersona_instances_received_total",
		"DICOM instances acknowledged with C-STORE success (durably stored).")
	BytesReceived = Default.NewCounter("dpersona_bytes_received_total",
		"Bytes of acknowledged DICOM instances (Part-10 file size).")
	RejectionsTotal = Default.NewCounterVec("dpersona_rejections_total",
		"Associations, connections or instances refused, by reason.", "reason")
	StudiesCompleted = Default.NewCounter("dpersona_studies_completed_total",
		"Studies assembled and handed to the bus.")
	StudyStageSeconds = Default.NewHistogramVec("dpersona_study_stage_seconds",
		"Latency of one study through a pipeline stage (receive, infer, export), in seconds.",
		StudyStageBuckets, "stage")
	InferenceSeconds = Default.NewHistogram("dpersona_inference_seconds",
		"Latency of one model run (both D-Persona stages over one series), in seconds.",
		InferenceBuckets)
	InferenceFailures = Default.NewCounter("dpersona_inference_failures_total",
		"Series whose inference failed.")
	ExportFailures = Default.NewCounterVec("dpersona_export_failures_total",
		"Failed attempts to deliver results, by destination (each retry counts).", "destination")
	ExportsTotal = Default.NewCounterVec("dpersona_exports_total",
		"Results delivered and acknowledged, by destination.", "destination")
	QueueDepth = Default.NewGaugeFuncVec("dpersona_queue_depth",
		"Messages waiting in a work queue (read from the bus at scrape time).", "queue")
	DiskFreeBytes = Default.NewGaugeFuncVec("dpersona_disk_free_bytes",
		"Free bytes on the file system of a data directory (read at scrape time).", "path")
	BuildInfo = Default.NewGaugeVec("dpersona_build_info",
		"Always 1; the labels say which build is running.", "version", "goversion")
)

func init() {
	Default.NewGaugeFunc("go_goroutines", "Goroutines that currently exist.",
		func() float64 { return float64(runtime.NumGoroutine()) })
}

// SetBuildInfo records the running version (call once at start-up with main.version).
func SetBuildInfo(version string) {
	BuildInfo.With(version, runtime.Version()).Set(1)
	buildVersion.Store(version)
}

// buildVersion is the version given to SetBuildInfo, for Summarize.
var buildVersion atomic.Value

// WatchDiskFree exports the free space of dir as dpersona_disk_free_bytes{path=dir}.
func WatchDiskFree(dir string) {
	DiskFreeBytes.Set(func() float64 {
		free, _, err := DiskSpace(dir)
		if err != nil {
			return -1 // visible in dashboards; the readiness check reports the error itself
		}
		return float64(free)
	}, dir)
}
