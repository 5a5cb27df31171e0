package dicomio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"dpersona/internal/dicomstd"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// Compressed pixel data is decoded by GDCM's gdcmconv (Debian package libgdcm-tools), run as a
// separate process: `gdcmconv --raw IN OUT` rewrites a file with its pixel data decompressed into
// explicit VR little endian, which the native reader then loads like any other file.
//
// Why GDCM: it is a maintained DICOM toolkit made for exactly this, and one tool covers every
// compressed transfer syntax a PACS forwards (JPEG baseline/extended/lossless through its IJG
// libjpeg builds for 8, 12 and 16 bits, JPEG-LS through CharLS, JPEG 2000 through OpenJPEG, RLE).
// dcmtk's free decoders (dcmdjpeg, dcmdjpls, dcmdrle) lack JPEG 2000, and no maintained pure-Go
// module decodes JPEG lossless, JPEG-LS and JPEG 2000; suyashkumar/dicom only hands out the
// encapsulated fragments. A separate process also keeps a crafted codestream away from the
// gateway's memory: a decoder crash fails one instance, not the process.

// Compressed transfer syntaxes decoded for inference (through the decoder above).
const (
	JPEGBaseline8Bit   = "1.2.840.10008.1.2.4.50"
	JPEGExtended12Bit  = "1.2.840.10008.1.2.4.51"
	JPEGLossless       = "1.2.840.10008.1.2.4.57"
	JPEGLosslessSV1    = "1.2.840.10008.1.2.4.70"
	JPEGLSLossless     = "1.2.840.10008.1.2.4.80"
	JPEGLSNearLossless = "1.2.840.10008.1.2.4.81"
	JPEG2000Lossless   = "1.2.840.10008.1.2.4.90"
	JPEG2000           = "1.2.840.10008.1.2.4.91"
	RLELossless        = "1.2.840.10008.1.2.5"
)

var compressedTransferSyntaxes = map[string]bool{
	JPEGBaseline8Bit: true, JPEGExtended12Bit: true, JPEGLossless: true, JPEGLosslessSV1: true,
	JPEGLSLossless: true, JPEGLSNearLossless: true, JPEG2000Lossless: true, JPEG2000: true, RLELossless: true,
}

// DecodableTransferSyntaxes lists every transfer syntax LoadSeries reads, in the order a storage
// SCP should prefer them when a sender offers several for one image: uncompressed first (no
// decoder run later), then lossless compression, then lossy. Explicit VR big endian (retired) and
// deflate are decoded too but left out: a sender always offers one of these as well.
func DecodableTransferSyntaxes() []string {
	return []string{dicomstd.ExplicitVRLittleEndian, dicomstd.ImplicitVRLittleEndian,
		JPEGLosslessSV1, JPEGLossless, JPEGLSLossless, JPEG2000Lossless, RLELossless,
		JPEGLSNearLossless, JPEG2000, JPEGBaseline8Bit, JPEGExtended12Bit}
}

// IsCompressedTransferSyntax reports whether LoadSeries decodes ts with the external decoder.
func IsCompressedTransferSyntax(ts string) bool { return compressedTransferSyntaxes[ts] }

// DecoderCommand is the decoder program (found on PATH), DecoderTimeout bounds one file's decoding.
var (
	DecoderCommand = "gdcmconv"
	DecoderTimeout = 60 * time.Second
)

// decompressedCopy writes a copy of the compressed Part-10 file at path with native pixel data
// into a temporary directory and returns its path and a function that removes it. The source
// file is never changed: it stays stored exactly as received.
func decompressedCopy(path, ts, name string) (string, func(), error) {
	bin, err := exec.LookPath(DecoderCommand)
	if err != nil {
		return "", nil, newErr(ErrCompressed, name, tagName(tag.TransferSyntaxUID), "%s (%s): the decoder %s (Debian package libgdcm-tools) is not installed", ts, transferSyntaxName(ts), DecoderCommand)
	}
	dir, err := os.MkdirTemp("", "dpersona-decode-")
	if err != nil {
		return "", nil, newErr(ErrCompressed, name, "", "temporary directory for decoding: %v", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	out := filepath.Join(dir, "native.dcm")
	ctx, cancel := context.WithTimeout(context.Background(), DecoderTimeout)
	defer cancel()
	// Arguments are passed as a list (no shell); "-i"/"-o" so no file name is read as an option.
	cmd := exec.CommandContext(ctx, bin, "--raw", "-i", path, "-o", out)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	if err := cmd.Run(); err != nil {
		cleanup()
		why := err.Error()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			why = fmt.Sprintf("timed out after %v", DecoderTimeout)
		}
		return "", nil, newErr(ErrCompressed, name, tagName(tag.TransferSyntaxUID), "%s (%s): %s could not decode the pixel data: %s: %s", ts, transferSyntaxName(ts), DecoderCommand, why, firstLine(stderr.String()))
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		cleanup()
		return "", nil, newErr(ErrCompressed, name, tagName(tag.TransferSyntaxUID), "%s (%s): %s wrote no output: %s", ts, transferSyntaxName(ts), DecoderCommand, firstLine(stderr.String()))
	}
	return out, cleanup, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
