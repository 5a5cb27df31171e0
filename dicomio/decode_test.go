package dicomio

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/internal/testutil"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// Compressed fixtures (testdata/dicom/compressed, made by make.sh there with dcmtk and GDCM
// encoders from two cropped LIDC CT slices) decode to the same modality values as dcmtk's own
// decompression of the same files, and, for the lossless ones, as the uncompressed originals.
// JPEG 2000 has no free dcmtk decoder: the original is its reference.
func TestDecodeCompressedEqualsDcmtk(t *testing.T) {
	testutil.RequireTool(t, DecoderCommand)
	native, err := LoadSeries(fixturePaths(t, filepath.Join("compressed", "native")))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dir, ts, dcmtk string
		lossless       bool
	}{
		{"jpeg-lossless-sv1", JPEGLosslessSV1, "dcmdjpeg", true},
		{"jpeg-ls", JPEGLSLossless, "dcmdjpls", true},
		{"rle", RLELossless, "dcmdrle", true},
		{"jpeg2000", JPEG2000Lossless, "", true},
		{"jpeg-baseline", JPEGBaseline8Bit, "dcmdjpeg", false},
	}
	for _, c := range cases {
		t.Run(c.dir, func(t *testing.T) {
			files := fixturePaths(t, filepath.Join("compressed", c.dir))
			for _, f := range files {
				if ts := fileTransferSyntax(t, f); ts != c.ts {
					t.Fatalf("%s has transfer syntax %s, want %s", f, ts, c.ts)
				}
			}
			got, err := LoadSeries(files)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Slices) != len(native.Slices) || got.Rows != native.Rows || got.Cols != native.Cols {
				t.Fatalf("decoded %d slices of %dx%d, want %d of %dx%d", len(got.Slices), got.Rows, got.Cols, len(native.Slices), native.Rows, native.Cols)
			}
			if got.Slices[0].Path != files[0] && got.Slices[1].Path != files[0] {
				t.Fatalf("slices name %s, %s instead of the compressed files", got.Slices[0].Path, got.Slices[1].Path)
			}
			if c.lossless {
				comparePixels(t, "the uncompressed original", got, native)
			}
			if c.dcmtk != "" {
				testutil.RequireTool(t, c.dcmtk)
				var ref []string
				for _, f := range files {
					out := filepath.Join(t.TempDir(), filepath.Base(f))
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					b, err := exec.CommandContext(ctx, c.dcmtk, f, out).CombinedOutput()
					cancel()
					if err != nil {
						t.Fatalf("%s %s: %v\n%s", c.dcmtk, f, err, b)
					}
					ref = append(ref, out)
				}
				want, err := LoadSeries(ref)
				if err != nil {
					t.Fatal(err)
				}
				comparePixels(t, c.dcmtk+"'s decompression", got, want)
			}
		})
	}
}

func comparePixels(t *testing.T, what string, got, want *Series) {
	t.Helper()
	for i := range want.Slices {
		g, w := got.Slices[i].Pixels, want.Slices[i].Pixels
		if len(g) != len(w) {
			t.Fatalf("slice %d: %d pixels, %s has %d", i, len(g), what, len(w))
		}
		diffs := 0
		for j := range w {
			if g[j] != w[j] {
				diffs++
			}
		}
		if diffs > 0 {
			t.Fatalf("slice %d: %d of %d pixels differ from %s", i, diffs, len(w), what)
		}
	}
}

func fileTransferSyntax(t *testing.T, path string) string {
	t.Helper()
	a, perr, err := parseFile(path)
	if err != nil || perr != nil {
		t.Fatalf("%s: %v %v", path, err, perr)
	}
	return a.str(tag.TransferSyntaxUID)
}

// A compressed file whose codestream is damaged fails with ErrCompressed naming the instance and
// the decoder's complaint, and a missing decoder says which Debian package to install.
func TestDecodeFailuresNameTheCause(t *testing.T) {
	testutil.RequireTool(t, DecoderCommand)
	src := fixturePaths(t, filepath.Join("compressed", "jpeg-ls"))[0]
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) - 4000; i < len(b)-100; i++ {
		b[i] = 0xFF // markers everywhere in the codestream
	}
	bad := filepath.Join(t.TempDir(), "bad.dcm")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSeries([]string{bad})
	var de *Error
	if err == nil {
		// Some decoders return noise for a damaged stream instead of failing: it must not equal the original.
		orig, err := LoadSeries([]string{src})
		if err != nil {
			t.Fatal(err)
		}
		if equalPixels(s.Slices[0].Pixels, orig.Slices[0].Pixels) {
			t.Fatal("a damaged codestream decoded to the original pixels")
		}
	} else if !errors.As(err, &de) || !errors.Is(err, ErrCompressed) || de.Instance == "" {
		t.Fatalf("want ErrCompressed naming the instance, got %v", err)
	}
	defer func(old string) { DecoderCommand = old }(DecoderCommand)
	DecoderCommand = "dpersona-no-such-decoder"
	if _, err := LoadSeries([]string{src}); !errors.Is(err, ErrCompressed) || !strings.Contains(err.Error(), "libgdcm-tools") {
		t.Fatalf("missing decoder: got %v", err)
	}
}

func equalPixels(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
