package main

import (
	"fmt"
	"image/png"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"dpersona/dicomio"
	"dpersona/internal/dicomstd"
)

func init() { registerCommand(newPreviewCommand) }

func newPreviewCommand() *cobra.Command {
	var segPath, sourceDir, outPath string
	var slice, crop int
	cmd := &cobra.Command{
		Use:   "preview --seg SEG.dcm --source DIR [--slice N] --out FILE.png",
		Short: "Render a source slice with the segments' outlines and a legend as PNG",
		Long: "Render one slice of the source series with every segment of a DICOM-SEG outlined in its own\n" +
			"colour and a legend of segment labels. --slice is the index in the sorted series (0 = lowest\n" +
			"position along the slice normal); by default the slice with the most segmented pixels.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if segPath == "" || sourceDir == "" || outPath == "" {
				return fmt.Errorf("--seg, --source and --out are required")
			}
			seg, err := dicomio.ReadSEG(segPath)
			if err != nil {
				return err
			}
			files, err := dicomio.SeriesFiles(sourceDir)
			if err != nil {
				return err
			}
			segAbs, _ := filepath.Abs(segPath)
			var srcFiles []string
			for _, f := range files {
				if abs, _ := filepath.Abs(f); abs != segAbs {
					srcFiles = append(srcFiles, f)
				}
			}
			if len(srcFiles) == 0 {
				return fmt.Errorf("no DICOM files in %s", sourceDir)
			}
			src, err := dicomio.LoadSeries(srcFiles)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("slice") {
				if slice < 0 || slice >= len(src.Slices) {
					return fmt.Errorf("--slice %d: the series has %d slices (0..%d)", slice, len(src.Slices), len(src.Slices)-1)
				}
			} else {
				if slice, err = busiestSlice(seg, src); err != nil {
					return err
				}
			}
			img, err := dicomio.RenderPreview(src, slice, seg, dicomio.PreviewOptions{Crop: crop})
			if err != nil {
				return err
			}
			if err := dicomstd.WriteAtomic(outPath, 0o644, func(w io.Writer) error { return png.Encode(w, img) }); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: slice %d of %d (%s), %d segments\n", outPath, slice, len(src.Slices), src.Slices[slice].SOPInstanceUID, len(seg.Segments))
			return nil
		},
	}
	cmd.Flags().StringVar(&segPath, "seg", "", "DICOM-SEG file")
	cmd.Flags().StringVar(&sourceDir, "source", "", "folder of the source series the SEG references")
	cmd.Flags().IntVar(&slice, "slice", 0, "slice index in the sorted series (default: most segmented)")
	cmd.Flags().IntVar(&crop, "crop", 0, "show only a window of this many pixels around the segments (0: the whole slice)")
	cmd.Flags().StringVar(&outPath, "out", "", "PNG file to write")
	return cmd
}

// busiestSlice is the slice with the most pixels inside any segment.
func busiestSlice(seg *dicomio.SEG, src *dicomio.Series) (int, error) {
	masks, err := seg.MasksFor(src)
	if err != nil {
		return 0, err
	}
	best, bestCount := 0, -1
	for i := range src.Slices {
		count := 0
		for k := range masks {
			for _, v := range masks[k][i] {
				if v != 0 {
					count++
				}
			}
		}
		if count > bestCount {
			best, bestCount = i, count
		}
	}
	return best, nil
}
