#!/bin/sh
# Regenerates the compressed fixtures from two real LIDC-IDRI CT slices (testdata/dicom/lidc-ct-0004,
# CC BY 3.0) with real encoders from Debian: dcmtk (dcmcjpeg, dcmcjpls, dcmcrle) and GDCM
# (gdcmconv --j2k, OpenJPEG inside). The slices are first cropped to the central 128x128 pixels
# (pydicom) so the files stay small; everything else (UIDs aside) is the original data set.
# Run from the repository root: sh testdata/dicom/compressed/make.sh
set -eu
out=testdata/dicom/compressed
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$tmp" <<'PY'
import sys, pydicom
tmp = sys.argv[1]
for i, name in enumerate(["001.dcm", "002.dcm"]):
    ds = pydicom.dcmread("testdata/dicom/lidc-ct-0004/" + name)
    arr = ds.pixel_array[192:320, 192:320].copy()
    ds.PixelData = arr.tobytes()
    ds.Rows, ds.Columns = arr.shape
    sp = [float(v) for v in ds.PixelSpacing]
    pos = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [pos[0] + 192 * sp[1], pos[1] + 192 * sp[0], pos[2]]
    # New instance and series UIDs (2.25 + a fixed integer): these are derived objects.
    ds.SeriesInstanceUID = "2.25.1414000000000000000000000000000001"
    ds.SOPInstanceUID = "2.25.14140000000000000000000000000001%02d" % (i + 1)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription = "LIDC crop 128x128 for codec tests"
    ds.save_as("%s/%d.dcm" % (tmp, i + 1), write_like_original=False)
PY
for i in 1 2; do
  mkdir -p "$out/native" "$out/jpeg-lossless-sv1" "$out/jpeg-ls" "$out/rle" "$out/jpeg2000" "$out/jpeg-baseline"
  cp "$tmp/$i.dcm" "$out/native/$i.dcm"
  dcmcjpeg +e1 "$tmp/$i.dcm" "$out/jpeg-lossless-sv1/$i.dcm"  # JPEG Lossless, First-Order Prediction (1.2.840.10008.1.2.4.70)
  dcmcjpls +el "$tmp/$i.dcm" "$out/jpeg-ls/$i.dcm"            # JPEG-LS Lossless (1.2.840.10008.1.2.4.80)
  dcmcrle "$tmp/$i.dcm" "$out/rle/$i.dcm"                      # RLE Lossless (1.2.840.10008.1.2.5)
  gdcmconv --j2k "$tmp/$i.dcm" "$out/jpeg2000/$i.dcm"          # JPEG 2000 Lossless (1.2.840.10008.1.2.4.90)
  dcmcjpeg +eb "$tmp/$i.dcm" "$out/jpeg-baseline/$i.dcm"       # JPEG Baseline, 8-bit lossy (1.2.840.10008.1.2.4.50)
done
