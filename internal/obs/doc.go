// Package obs is what operators see of the gateway: Prometheus metrics, structured logs without
// patient identifiers, health and readiness, and the bearer-token guard of the HTTP API. It uses
// the standard library only and imports no other package of the project, so every package may use
// it.
//
// # Wiring (cmd/dpersona/serve.go; the package Example runs it)
//
//	logger := obs.NewLogger(os.Stderr, level) // JSON lines, redacting, correlation ids
//	slog.SetDefault(logger)
//	obs.SetBuildInfo(version)
//	obs.WatchDiskFree(dataDir)
//	obs.QueueDepth.Set(func() float64 { return float64(depth("study_complete")) }, "study_complete")
//
//	mux := http.NewServeMux()
//	mux.Handle("/api/", obs.RequireBearer(apiToken, apiMux)) // token "" = open
//	obs.Mount(mux, // /healthz, /readyz, /metrics
//		obs.DiskCheck(dataDir, watermarkBytes),
//		obs.Check{Name: "nats", Func: natsReachable}, // func(context.Context) error
//		obs.Check{Name: "model", Func: modelLoaded})
//
// # Metrics (all in obs.Default, served by Default.Handler)
//
//	dpersona_associations_active          gauge      AssociationsActive.Inc()/.Dec()
//	dpersona_associations_total{outcome}  counter    AssociationsTotal.With(obs.OutcomeAccepted).Inc()
//	dpersona_instances_received_total     counter    InstancesReceived.Inc()     (after the C-STORE ack)
//	dpersona_bytes_received_total         counter    BytesReceived.Add(float64(size))
//	dpersona_rejections_total{reason}     counter    RejectionsTotal.With(obs.RejectDiskLow).Inc()
//	dpersona_studies_completed_total      counter    StudiesCompleted.Inc()
//	dpersona_study_stage_seconds{stage}   histogram  StudyStageSeconds.With(obs.StageReceive).ObserveSince(first)
//	dpersona_inference_seconds            histogram  InferenceSeconds.ObserveSince(start)
//	dpersona_inference_failures_total     counter    InferenceFailures.Inc()
//	dpersona_exports_total{destination}   counter    ExportsTotal.With("PACS@10.0.0.5:104").Inc()
//	dpersona_export_failures_total{destination} counter ExportFailures.With(dest).Inc() (each failed try)
//	dpersona_queue_depth{queue}           gauge      QueueDepth.Set(fn, "study_complete")  (read at scrape)
//	dpersona_disk_free_bytes{path}        gauge      WatchDiskFree(dir)
//	dpersona_build_info{version,goversion} gauge     SetBuildInfo(version)
//	go_goroutines                         gauge      automatic
//
// Label values must come from bounded sets (the Reject*, Stage* and Outcome* constants, configured
// destinations and queue names), never from UIDs or anything received from a peer.
//
// # Logs
//
// One correlation id per association and one per study: NewCorrelationID for an association
// (random), StudyCorrelationID(calledAE, studyUID) for a study (derived, so every role and machine
// logs the same id for it without passing it along). Put it in the context with WithCorrelation
// and log with logger.InfoContext(ctx, ...) (the handler adds "correlation_id"), or bind it with
// logger.With(obs.Correlation(id)). Log UIDs, AE titles and
// counts. The redacting handler masks attributes whose keys name patient identifiers
// (IsSensitiveKey: PatientName, patient_id, "(0010,0030)", name, dob, ...) with "[REDACTED]"; it
// cannot see identifiers formatted into the message text, so never do that. Note that the generic
// key "name" is redacted too: use specific keys ("model", "check", "destination").
//
// # HTTP
//
// /healthz is liveness (always 200 while serving); /readyz runs the checks concurrently, each
// under its timeout (DefaultCheckTimeout when unset) and answers 200 or 503 with a ReadyReport.
// RequireBearer compares tokens in constant time; an empty token disables it.
package obs
