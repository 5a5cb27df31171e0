// Package inference serves the D-Persona model from Go: it loads model bundles
// (docs/model-bundle.md), runs both stages through onnxruntime, checks parity with training
// (golden vectors) and computes the evaluation metrics. It knows nothing about DICOM.
//
// # Bundles
//
//	b, err := inference.LoadBundle("models/default")
//
// LoadBundle reads manifest.json, refuses a format_version other than 1, validates the manifest
// (input spec, raters, defaults, segment codes, algorithm, that every path stays inside the
// bundle, that the graph and golden vectors are listed) and checks the SHA-256 of every listed
// file. Errors are *BundleError naming the model and the cause; a changed file wraps ErrChecksum.
//
// # Engine
//
//	e, err := inference.NewEngine(b, inference.EngineOptions{Device: "cpu", IntraOpThreads: 2})
//	noise := inference.StudyNoise(studyUID, seed, S, K, b.Manifest.LatentSize)
//	pred, err := e.Predict(ctx, tiles, n, noise) // tiles [n,C,H,W] already intensity-mapped
//
// NewEngine loads the onnxruntime shared library once per process (ResolveLibraryPath: the
// --ort-lib flag, then $DPERSONA_ORT_LIB, then third_party/onnxruntime/libonnxruntime.so.1.27.0
// beside the working directory or the executable) and refuses a library whose version is not
// 1.27.x or that lacks the C API version onnxruntime_go v1.27.0 needs. It re-hashes the graph
// bytes it hands to onnxruntime, compares the graph's inputs and outputs with the manifest
// (names, float32, channels, tile size, latent size, rater count) and creates a pool of
// Sessions sessions with IntraOpThreads threads each; Sessions x threads never exceeds the CPU
// count, so concurrent studies queue for a session instead of oversubscribing cores. Idle
// threads do not spin unless EngineOptions.Spin is set (the machine is shared with the gateway).
//
// One graph run serves both stages from one backbone pass: sample_probs [N,S,H,W] (stage I, one
// map per diversified sample) and rater_probs [N,R,H,W] (stage II, one map per rater head,
// attention over a bank of K prior samples). Predict splits n tiles into near-equal batches of
// at most BatchSize. Inputs with NaN/Inf, inputs of the wrong size and outputs with NaN/Inf are
// errors naming the model; a cancelled context terminates a run in progress.
//
// # Noise, consensus and uncertainty
//
// StudyNoise is deterministic: ChaCha8 keyed by SHA-256 of (stream, study UID, seed), normal
// values by Box-Muller. The same draws serve every tile and slice of a study (sample j is one
// latent code for the whole volume) and a re-run gives the same masks. Both streams are
// prefix-stable: the first 10 of 50 samples are the 10 samples of S=10.
// ConsensusAndUncertainty gives the soft consensus (mean of the S sample probabilities) and the
// uncertainty map, defined as the per-pixel population standard deviation of the S sample
// probabilities (0 where all samples agree; at most 0.5).
//
// # CUDA
//
// Device "cuda:N" appends onnxruntime's CUDA execution provider (device_id N). When the library
// was built without CUDA, or the provider libraries, driver or device are missing, the engine
// builds CPU sessions instead and DeviceNote says why. The pinned library is the CPU build; the
// CUDA path is written against onnxruntime_go's API but was not exercised here (see
// inference/README.md for provisioning a GPU build).
//
// # Golden vectors and evaluation
//
// VerifyGolden runs the bundle's golden cases (PyTorch's outputs) and fails when any probability
// differs by more than the tolerance (1e-4). Evaluate runs the engine over a multi-rater .npz
// (ReadNPZ: stored or deflated members, C-order little-endian arrays) and computes the metrics of
// training/metrics.py with the same keys: GED (reference: empty-vs-empty distance 1; and
// ged_empty0), Dice_soft, Dice_max, Dice_match (Hungarian matching, MinCostAssignment) for the
// samples and the heads, and the personalised Dice per rater (unmatched and matched). Its noise is
// TorchRandn, a reimplementation of torch.randn on a manual_seed generator, drawn per batch of 16
// exactly as training/evaluate.py draws it, so the two evaluations differ only by arithmetic.
package inference
