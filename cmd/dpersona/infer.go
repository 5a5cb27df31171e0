package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"dpersona/dicomio"
	"dpersona/internal/dicomstd"
	"dpersona/pipeline"
)

func init() { registerCommand(newInferCommand) }

type inferOptions struct {
	model     modelFlags
	out       string
	outputs   []string
	seed      int64
	samples   int
	bank      int
	threshold float64
	roi       string
	lesions   []string
	prompts   []string
	encoding  pipeline.Encoding
}

func newInferCommand() *cobra.Command {
	var o inferOptions
	cmd := &cobra.Command{
		Use:   "infer --out DIR INPUT_DIR...",
		Short: "Segment DICOM series offline: each input folder holds one series; SEG objects are written to --out",
		Long: "infer reads each INPUT_DIR as one series (the Part-10 files in it), runs both D-Persona\n" +
			"stages and writes, per series, OUT/<SeriesInstanceUID>/<output>.dcm. The default outputs are\n" +
			"BINARY SEGs every viewer shows: raters (a segment per expert style), samples (a segment per\n" +
			"plausible outline) and consensus (mean probability above the threshold); lesion mode adds\n" +
			"rtstruct (an RT Structure Set for planning systems). Also available: bands (BINARY, a segment\n" +
			"per probability band) and probability (FRACTIONAL, which OHIF and dcmjs cannot show).\n" +
			"A series that fails is reported with its reason and the command exits non-zero; the other\n" +
			"series are still processed.\n\n" +
			"With --lesion or --prompts the model runs in lesion mode: only on tiles centred on each\n" +
			"marked lesion, followed through the neighbouring slices; every output holds one set of\n" +
			"segments per lesion. Prompts that cannot be used are listed with their reason.",
		Example: "  dpersona infer --out out testdata/dicom/lidc-ct-0005\n" +
			"  dpersona infer --out out --prompts testdata/dicom/prompts/lidc-ct-0005-length-sr.dcm testdata/dicom/lidc-ct-0005\n" +
			"  dpersona infer --out out --lesion 1.3.6.1.4.1.14519.5.2.1.6279.6001.311195925875901500077224495899:406,311 testdata/dicom/lidc-ct-0005",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInfer(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), &o, args)
		},
	}
	o.model.register(cmd, true)
	fs := cmd.Flags()
	fs.StringVar(&o.out, "out", "", "output directory")
	fs.StringSliceVar(&o.outputs, "outputs", nil, "objects to write: raters, samples, consensus, bands, probability, rtstruct (default raters,samples,consensus; lesion mode adds rtstruct)")
	fs.Float64SliceVar(&o.encoding.Bands, "bands", nil, "lower bounds of the probability bands of the bands output (default 0.25,0.5,0.75)")
	fs.BoolVar(&o.encoding.CompactSamples, "compact-samples", false, "samples output only on slices where the samples disagree (elsewhere they equal the consensus)")
	fs.BoolVar(&o.encoding.RTStructSamples, "rtstruct-samples", false, "add the samples as ROIs to the rtstruct output")
	fs.StringVar(&o.encoding.RTInterpretedType, "rt-interpreted-type", "", "RTROIInterpretedType of the rtstruct ROIs (default GTV)")
	fs.BoolVar(&o.encoding.Deflate, "deflate", false, "write the objects in the Deflated Explicit VR Little Endian transfer syntax (a whole-series BINARY SEG shrinks about 400-fold)")
	fs.Int64Var(&o.seed, "seed", 0, "noise seed (with the study UID: the same seed gives the same masks)")
	fs.IntVar(&o.samples, "samples", 0, "stage-I samples S (default: the manifest's)")
	fs.IntVar(&o.bank, "bank", 0, "stage-II bank size K (default: the manifest's)")
	fs.Float64Var(&o.threshold, "threshold", 0, "mask threshold (default: the manifest's)")
	fs.StringVar(&o.roi, "roi", "", "which tiles run: all, or lung (CT: tiles that contain lung) (default: the manifest's input.tiling.roi)")
	fs.StringArrayVar(&o.lesions, "lesion", nil, "lesion mode: a lesion at SOP_INSTANCE_UID:ROW,COLUMN (pixel counted from 0 at the top left; repeatable)")
	fs.StringArrayVar(&o.prompts, "prompts", nil, "lesion mode: read lesion prompts from a TID 1500 SR, GSPS or RTSTRUCT file (repeatable)")
	cmd.MarkFlagRequired("out")
	return cmd
}

func runInfer(ctx context.Context, stdout, stderr io.Writer, o *inferOptions, inputs []string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	dir, err := resolveModelDir(o.model.Model)
	if err != nil {
		return err
	}
	engine, err := o.model.openEngine(dir, stderrLogger())
	if err != nil {
		return err
	}
	defer engine.Close()
	if note := engine.DeviceNote(); note != "" {
		fmt.Fprintf(stderr, "dpersona: %s\n", note)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	var outputs []pipeline.Output
	for _, s := range o.outputs {
		outputs = append(outputs, pipeline.Output(strings.TrimSpace(s)))
	}
	var prompts []dicomio.Prompt
	for _, l := range o.lesions {
		p, err := dicomio.ParsePixelPrompt(l)
		if err != nil {
			return fmt.Errorf("--lesion: %w", err)
		}
		prompts = append(prompts, p)
	}
	var objects []*dicomio.PromptObject
	for _, f := range o.prompts {
		obj, err := dicomio.ReadPrompts(f)
		if err != nil {
			return fmt.Errorf("--prompts %s: %w", f, err)
		}
		objects = append(objects, obj)
	}
	proc := pipeline.New(engine)
	proc.SoftwareVersion = "dpersona " + version
	m := engine.Bundle().Manifest
	fmt.Fprintf(stdout, "model %s %s on %s\n", m.Name, m.Version, engine.Device())
	failed := 0
	for _, in := range inputs {
		files, err := inferSeriesFiles(in)
		if err != nil {
			fmt.Fprintf(stdout, "FAILED %s: %v\n", in, err)
			failed++
			continue
		}
		bar := newProgressBar(stderr, filepath.Base(filepath.Clean(in)))
		start := time.Now()
		res, err := proc.Process(ctx, pipeline.Request{SeriesFiles: files, Outputs: outputs, Seed: o.seed,
			Samples: o.samples, BankSize: o.bank, Threshold: o.threshold, ROI: o.roi, Progress: bar.update,
			Prompts: prompts, PromptObjects: objects, Encoding: o.encoding})
		bar.finish()
		if err != nil {
			fmt.Fprintf(stdout, "FAILED %s: %v\n", in, err)
			failed++
			continue
		}
		dst := filepath.Join(o.out, res.SeriesInstanceUID)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		var written []string
		for _, seg := range res.SEGs {
			p := filepath.Join(dst, string(seg.Output)+".dcm")
			if err := dicomstd.WriteFileAtomic(p, seg.Data, 0o644); err != nil {
				return err
			}
			written = append(written, fmt.Sprintf("%s (%d segments, %d frames)", p, seg.Segments, seg.Frames))
		}
		fmt.Fprintf(stdout, "%s: series %s, %d slices %dx%d, %d of %d tiles in %.2fs (load %.2fs, infer %.2fs, encode %.2fs)\n",
			in, res.SeriesInstanceUID, res.Slices, res.Rows, res.Cols, res.Timings.Tiles, res.Timings.TilesPlanned, time.Since(start).Seconds(),
			res.Timings.Load.Seconds(), res.Timings.Infer.Seconds(), res.Timings.Encode.Seconds())
		for _, f := range res.Findings {
			if f.Lesion != nil {
				fmt.Fprintf(stdout, "  lesion %s (%s %s): slice %d row %d column %d, followed over %d slices, tracking %s\n",
					f.Label, f.Lesion.Source, f.Lesion.Item, f.Lesion.Slice+1, f.Lesion.Row, f.Lesion.Column, len(f.Slices), f.TrackingUID)
			}
		}
		for _, is := range res.PromptIssues {
			fmt.Fprintf(stdout, "  prompt not used: %v\n", is)
		}
		for _, w := range res.Warnings {
			fmt.Fprintf(stdout, "  warning: %s\n", w)
		}
		for _, w := range written {
			fmt.Fprintf(stdout, "  wrote %s\n", w)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d series failed", failed, len(inputs))
	}
	return nil
}

// inferSeriesFiles lists the Part-10 files of a series folder (dicomio.SeriesFiles skips notes
// and masks kept beside them).
func inferSeriesFiles(dir string) ([]string, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("%s is not a directory (one folder per series)", dir)
	}
	files, err := dicomio.SeriesFiles(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no DICOM Part-10 files found")
	}
	return files, nil
}

// progressBar draws "label [#####-----] done/total" on a terminal; elsewhere (logs, pipes) it
// stays quiet so that output files are not filled with carriage returns.
type progressBar struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	tty   bool
	drawn bool
}

func newProgressBar(w io.Writer, label string) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, label: label, tty: tty}
}

func (b *progressBar) update(done, total int) {
	if !b.tty || total <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	const width = 30
	n := done * width / total
	fmt.Fprintf(b.w, "\r%s [%s%s] %d/%d", b.label, strings.Repeat("#", n), strings.Repeat("-", width-n), done, total)
	b.drawn = true
}

func (b *progressBar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}
