package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"dpersona/inference"
)

func init() { registerCommand(newModelsCommand) }

// defaultModelDir is where `make` and the README put the default bundle.
const defaultModelDir = "models/default"

// modelFlags are the options every command that runs the model shares (infer, eval, models
// verify, serve): which bundle, which onnxruntime library and how to run it.
type modelFlags struct {
	Model    string
	ORTLib   string
	Device   string
	Threads  int
	Sessions int
	Batch    int
	Spin     bool
}

func (f *modelFlags) register(cmd *cobra.Command, withModel bool) {
	fs := cmd.Flags()
	if withModel {
		fs.StringVar(&f.Model, "model", "", "model bundle directory (default: "+defaultModelDir+" beside the working directory or the executable)")
	}
	fs.StringVar(&f.ORTLib, "ort-lib", "", "onnxruntime shared library (default: $"+inference.ORTLibEnv+", then third_party/onnxruntime/"+inference.ORTLibName+")")
	fs.StringVar(&f.Device, "device", "cpu", "execution device: cpu or cuda:N (falls back to the CPU, with a message, when CUDA is unavailable)")
	fs.IntVar(&f.Threads, "threads", 0, "intra-op threads per session (default: CPUs / sessions)")
	fs.IntVar(&f.Sessions, "sessions", 0, "concurrent onnxruntime sessions (default: on the CPU one single-threaded session per CPU, up to 8; on CUDA 1; sessions x threads is kept within the CPU count)")
	fs.IntVar(&f.Batch, "batch", 8, "tiles per graph run")
	fs.BoolVar(&f.Spin, "spin", false, "let idle onnxruntime threads busy-wait (faster on an idle machine, wasteful on a shared one)")
}

// resolveModelDir finds a bundle directory: an explicit path as given, otherwise models/default
// relative to the working directory, then to the executable's directory and its parent (for
// bin/dpersona in a checkout).
func resolveModelDir(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	candidates := []string{defaultModelDir}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dir := filepath.Dir(exe)
		candidates = append(candidates, filepath.Join(dir, defaultModelDir), filepath.Join(dir, "..", defaultModelDir))
	}
	for _, c := range candidates {
		if _, err := os.Stat(filepath.Join(c, "manifest.json")); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("no model bundle given (--model) and none found at %s relative to the working directory or the executable", defaultModelDir)
}

// openEngine loads the bundle (checksums verified) and creates its sessions.
func (f *modelFlags) openEngine(dir string, logger *slog.Logger) (*inference.Engine, error) {
	bundle, err := inference.LoadBundle(dir)
	if err != nil {
		return nil, err
	}
	return inference.NewEngine(bundle, inference.EngineOptions{
		LibraryPath:    inference.ResolveLibraryPath(f.ORTLib),
		Device:         f.Device,
		IntraOpThreads: f.Threads,
		Sessions:       f.Sessions,
		BatchSize:      f.Batch,
		Spin:           f.Spin,
		Logger:         logger,
	})
}

func stderrLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newModelsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "models",
		Short: "Inspect and verify model bundles",
	}
	cmd.AddCommand(newModelsVerifyCommand(), newModelsBenchCommand())
	return cmd
}

func newModelsVerifyCommand() *cobra.Command {
	var flags modelFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify [DIR]",
		Short: "Check a bundle's checksums and run its golden vectors (parity with training within the tolerance)",
		Long: "verify loads the bundle (manifest, format version, every file's SHA-256), runs each golden case\n" +
			"through onnxruntime and compares the probabilities with PyTorch's (training's) within the\n" +
			"tolerance of golden.json (1e-4). It exits non-zero when any check fails. DIR defaults to " + defaultModelDir + ".",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := modelDirArg(args)
			if err != nil {
				return err
			}
			return runModelsVerify(cmd.Context(), cmd.OutOrStdout(), dir, &flags, asJSON)
		},
	}
	flags.register(cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func runModelsVerify(ctx context.Context, out io.Writer, dir string, flags *modelFlags, asJSON bool) error {
	engine, err := flags.openEngine(dir, stderrLogger())
	if err != nil {
		return err
	}
	defer engine.Close()
	rep, verr := inference.VerifyGolden(ctx, engine)
	if rep == nil {
		return verr
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		m := engine.Bundle().Manifest
		fmt.Fprintf(out, "model %s %s (%s): manifest and %d file checksums ok\n", m.Name, m.Version, engine.Bundle().Dir, len(m.Files))
		if note := engine.DeviceNote(); note != "" {
			fmt.Fprintf(out, "device: %s (%s)\n", engine.Device(), note)
		} else {
			fmt.Fprintf(out, "device: %s, %d intra-op threads\n", engine.Device(), engine.Threads())
		}
		for _, c := range rep.Cases {
			status := "ok"
			if !c.Pass {
				status = "FAIL"
			}
			fmt.Fprintf(out, "golden %-16s sample_probs max|diff| %.3g  rater_probs max|diff| %.3g  (tolerance %g) %s\n",
				c.Name, c.MaxAbsDiff[inference.OutputSampleProb], c.MaxAbsDiff[inference.OutputRaterProb], rep.Tolerance, status)
		}
	}
	if verr != nil {
		return verr
	}
	if !rep.Pass {
		return errors.New("golden vectors failed")
	}
	return nil
}

type benchCase struct {
	Samples, Bank, Batch int
}

func newModelsBenchCommand() *cobra.Command {
	var flags modelFlags
	var samples, banks, batches []int
	var iters int
	cmd := &cobra.Command{
		Use:   "bench [DIR]",
		Short: "Time both stages through onnxruntime: ms per slice and slices/s for each S, K and batch",
		Long: "bench runs the bundle's graph on random 128x128 inputs (one slice = one model input) for\n" +
			"every combination of --samples, --bank and --batches, after one warm-up run, and prints one\n" +
			"JSON line per combination (ms_per_slice from the fastest of --iters runs, and the mean).\n" +
			"scripts/bench-inference.sh compares it with PyTorch eager.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := modelDirArg(args)
			if err != nil {
				return err
			}
			engine, err := flags.openEngine(dir, stderrLogger())
			if err != nil {
				return err
			}
			defer engine.Close()
			var cases []benchCase
			for _, s := range samples {
				for _, k := range banks {
					for _, b := range batches {
						cases = append(cases, benchCase{s, k, b})
					}
				}
			}
			return runModelsBench(cmd.Context(), cmd.OutOrStdout(), engine, cases, iters)
		},
	}
	flags.register(cmd, false)
	fs := cmd.Flags()
	fs.IntSliceVar(&samples, "samples", []int{10, 50}, "stage-I sample counts S")
	fs.IntSliceVar(&banks, "bank", []int{100, 500}, "stage-II bank sizes K")
	fs.IntSliceVar(&batches, "batches", []int{1, 8}, "slices per graph run")
	fs.IntVar(&iters, "iters", 5, "timed runs per combination")
	return cmd
}

func runModelsBench(ctx context.Context, out io.Writer, e *inference.Engine, cases []benchCase, iters int) error {
	if ctx == nil {
		ctx = context.Background()
	}
	m := e.Bundle().Manifest
	chw := m.Input.Channels * m.Input.Height * m.Input.Width
	L := m.LatentSize
	for _, c := range cases {
		noise := inference.StudyNoise("bench", 1, c.Samples*c.Batch, c.Bank*c.Batch, L)
		img := make([]float32, c.Batch*chw)
		for i := range img {
			img[i] = float32((i*2654435761)%1000) / 999
		}
		run := func() error {
			_, _, err := e.Run(ctx, img, c.Batch, noise.Samples, c.Samples, noise.Bank, c.Bank)
			return err
		}
		if err := run(); err != nil { // warm-up: first-run allocations and kernel selection
			return err
		}
		// The fastest run is the least disturbed by other work on a shared machine (PyTorch's
		// side in scripts/bench_torch_infer.py reports the same statistic); the mean is kept too.
		fastest, total := time.Duration(1<<62), time.Duration(0)
		for i := 0; i < iters; i++ {
			start := time.Now()
			if err := run(); err != nil {
				return err
			}
			d := time.Since(start)
			fastest, total = min(fastest, d), total+d
		}
		perSlice := fastest.Seconds() / float64(c.Batch)
		line, _ := json.Marshal(map[string]any{
			"model": m.Name, "config": m.Config, "samples": c.Samples, "bank": c.Bank, "batch": c.Batch,
			"iters": iters, "threads": e.Threads(), "device": e.Device(),
			"ms_per_slice": perSlice * 1e3, "slices_per_s": 1 / perSlice,
			"mean_ms_per_slice": total.Seconds() / float64(iters*c.Batch) * 1e3,
		})
		fmt.Fprintln(out, string(line))
	}
	return nil
}

// modelDirArg resolves the optional [DIR] argument of the models sub-commands (default: the
// default bundle).
func modelDirArg(args []string) (string, error) {
	explicit := ""
	if len(args) == 1 {
		explicit = args[0]
	}
	return resolveModelDir(explicit)
}
