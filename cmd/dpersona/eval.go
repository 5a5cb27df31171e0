package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/spf13/cobra"

	"dpersona/inference"
)

func init() { registerCommand(newEvalCommand) }

type evalOptions struct {
	model  modelFlags
	data   string
	opts   inference.EvalOptions
	asJSON bool
}

func newEvalCommand() *cobra.Command {
	var o evalOptions
	cmd := &cobra.Command{
		Use:   "eval --model DIR --data FILE.npz",
		Short: "Metrics of the served model on a multi-rater data set (same as python3 -m training evaluate)",
		Long: "eval runs the bundle through onnxruntime on every image of an .npz (images uint8 [N,H,W],\n" +
			"masks uint8 [N,R,H,W]) and reports GED (reference and empty-pair-0 variants), Dice_soft,\n" +
			"Dice_max, Dice_match (Hungarian) for the stage-I samples and the stage-II heads, and the\n" +
			"personalised Dice per rater. Noise is drawn exactly as the training evaluation draws it\n" +
			"(torch.randn, --seed, batches of 16), so the two reports of one model agree to about 1e-3.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runEval(cmd.Context(), cmd.OutOrStdout(), &o)
		},
	}
	o.model.register(cmd, true)
	fs := cmd.Flags()
	fs.StringVar(&o.data, "data", "", "multi-rater .npz (images, masks)")
	fs.IntVar(&o.opts.Samples, "samples", 0, "stage-I samples S (default: the manifest's)")
	fs.IntVar(&o.opts.BankSize, "bank", 0, "stage-II bank size K (default: the manifest's)")
	fs.Uint64Var(&o.opts.Seed, "seed", 1337, "noise seed (training evaluate's default)")
	fs.IntVar(&o.opts.Limit, "limit", 0, "first N images only")
	fs.BoolVar(&o.asJSON, "json", false, "print JSON")
	cmd.MarkFlagRequired("data")
	return cmd
}

func runEval(ctx context.Context, out io.Writer, o *evalOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	dir, err := resolveModelDir(o.model.Model)
	if err != nil {
		return err
	}
	set, err := inference.LoadEvalNPZ(o.data)
	if err != nil {
		return err
	}
	engine, err := o.model.openEngine(dir, stderrLogger())
	if err != nil {
		return err
	}
	defer engine.Close()
	opts := o.opts
	bar := newProgressBar(os.Stderr, "eval")
	opts.Progress = bar.update
	rep, err := inference.Evaluate(ctx, engine, set, opts)
	bar.finish()
	if err != nil {
		return err
	}
	rep.Data = o.data
	if o.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(out, "model %s %s on %s (%s, S=%d, K=%d, seed %d)\n", rep.Model, rep.Version, rep.Data, rep.Device, rep.Samples, rep.BankSize, rep.Seed)
	keys := make([]string, 0, len(rep.Metrics))
	for k := range rep.Metrics {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "%-32s %v\n", k, rep.Metrics[k])
	}
	return nil
}
