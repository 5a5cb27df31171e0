// Package dicomio turns a received DICOM series into model input and model output back into
// DICOM-SEG. It knows no network. Parsing uses github.com/suyashkumar/dicom v1.1.0; writing,
// element order, the file meta group and 1-bit packing are done here, because v1.1.0 gets them
// wrong: it writes elements unsorted (dcmtk and dciodvfy reject such files), leaves out
// FileMetaInformationVersion (0002,0001) and ImplementationClassUID (0002,0012), and unpacks 1-bit
// pixel data MSB-first where PS3.5 8.1.1 packs LSB-first. The SEG tests check what this package
// writes with dciodvfy and pydicom and its bit packing against highdicom's files.
//
// # Series -> volume
//
//	files, err := dicomio.SeriesFiles(dir) // the Part-10 files of a folder
//	s, err := dicomio.LoadSeries(files)    // or LoadSeriesWithOptions(files, LoadOptions{...})
//
// LoadSeries parses every file, expands enhanced multi-frame images into one Slice per frame
// (per-frame and shared functional groups: position, orientation, pixel measures, rescale),
// checks that all instances belong to one series (Study, Series, Frame of Reference, SOP class,
// modality; no duplicate SOP Instance UID), that orientation, rows/columns and pixel spacing
// agree, and sorts slices by the projection of ImagePositionPatient on the slice normal
// (row x column direction). Spacing is checked between every pair of neighbours, not inferred
// from the first two: two slices at one location are an error; gaps, irregular spacing and
// in-plane shifts are Series.Warnings (or ErrIrregularSpacing with RejectIrregularSpacing).
// Slice.Pixels are float32 modality values (rescale slope/intercept applied, 8/16/32-bit,
// signed or unsigned, BitsStored honoured; never inverted, Series.PhotometricInterpretation says
// MONOCHROME1 and PlanTilesForSeries inverts the model input instead). Native transfer syntaxes are
// read directly; compressed ones (JPEG, JPEG-LS, JPEG 2000, RLE: DecodableTransferSyntaxes) are
// decoded into a temporary native copy by GDCM's gdcmconv (decode.go says why that decoder).
//
// Errors are *Error values naming the instance (path and SOP Instance UID) and attribute; match
// them with errors.Is against ErrCompressed, ErrGeometry, ErrMixedSeries, ErrTooFewSlices,
// ErrTruncatedPixelData, ErrUnsupportedPixelFormat, ErrMissingAttribute, ErrIrregularSpacing,
// ErrNotDICOM, ErrInvalidSpec, ErrInvalidSEG.
//
// # Model input and back
//
// InputSpec is the manifest's `input` object (docs/model-bundle.md): the one type
// internal/modelspec defines for inference and dicomio alike, validated at bundle load.
//
//	plan, err := dicomio.PlanTilesForSeries(spec, s)     // validates spec; or PlanTiles(spec, rows, cols)
//	batch, err := plan.ExtractTiles(s.Slices[i].Pixels)  // [len(plan.Tiles), C, H, W] float32
//	... run the model on batch, get out [len(plan.Tiles), M, H, W] ...
//	maps, err := plan.Blend(out, M)                      // M maps of Rows*Cols on the source grid
//
// or incrementally with plan.NewBlender(M), Add/AddBatch per tile, Result. Tile mode lays
// overlapping native-resolution tiles (start every tile-overlap pixels, the last one flush with
// the far edge; a slice smaller than a tile is edge-padded), normalises each tile on its own
// (minmax scope "tile") or the whole slice (scope "slice"), and blends outputs back by weighted
// averaging with linear ramps across the overlaps. Resize mode resamples the whole slice
// bilinearly to Height x Width and each output map back. Every result has the source's Rows x
// Cols. A TilePlan depends only on the spec and slice size, so one plan serves a whole series.
// For MONOCHROME1 series the [0,1] input is flipped (1-x) so the model sees the displayed image.
//
// # DICOM-SEG
//
//	info, err := dicomio.WriteSEGFile(path, s, dicomio.SEGDescription{
//		Type:     dicomio.Binary, // or dicomio.Fractional (PROBABILITY, MaxFractionalValue 255)
//		Segments: []dicomio.SegmentDescription{{Label: "Nodule rater 1", Category: cat, Type: typ,
//			Algorithm: dicomio.Algorithm{Type: dicomio.SemiAutomatic, Name: "D-Persona",
//				Version: "2026.11.28-1", Family: dicomio.AlgorithmFamilyAI},
//			TrackingID: "lesion 1", TrackingUID: uidFromTheMeasurement, // optional, together
//			AnatomicRegion: &dicomio.Lung, DisplayColor: &rgb}},
//		SeriesDescription: "D-Persona raters (AI)", ContentLabel: "DPERSONA",
//		Equipment: dicomio.Equipment{Manufacturer: "dpersona", ManufacturerModelName: "dpersona",
//			DeviceSerialNumber: installationID, SoftwareVersions: version},
//	}, masks) // masks[segment][slice] = Rows*Cols uint8 (nil = empty); see Threshold, QuantizeFraction
//
// EncodeSEG/WriteSEG/WriteSEGFile write Segmentation Storage in explicit VR little endian with
// all required modules: patient and study attributes copied from the source, new UIDs
// (2.25.<UUID>, see dicomstd.NewUID) unless given, segments numbered from 1 in the order given with
// labels, category/type codes, the caller's algorithm identification and tracking identifiers,
// SegmentsOverlap computed from the
// masks, shared orientation and pixel measures, per-frame source image reference
// (ReferencedFrameNumber for multi-frame sources), position, dimension index (segment number,
// 1-based slice index in sorted order) and segment number. Frames are ordered by segment, then
// slice; all-zero frames are omitted. BINARY frames are one continuous LSB-first bit stream.
// DS values are at most 16 characters. The description is validated first (CS/LO repertoire
// and lengths, codes, equipment, algorithm, TrackingID/TrackingUID pairs, mask sizes and
// values); each module of the IOD has one builder (modules.go, seg.go), attributes are named
// by the tag package's constants.
//
// Several findings (lesions) share one SEG: append one SegmentDescription per finding (each
// with the TrackingID/TrackingUID of its measurement) and its masks at the same index.
//
// ReadSEG reads a SEG (ours or anyone's) with its own bit unpacking; SEG.Mask and SEG.MasksFor
// map frames back to source slices by SOP Instance UID (and frame number), checking positions.
//
// # RT Structure Set
//
// EncodeRTStruct writes the same masks as an RT Structure Set for planning systems: each mask is
// traced exactly along pixel boundaries (TraceMask: 4-connected parts, holes as separate
// contours to be combined by the even-odd rule) and written as CLOSED_PLANAR contours in patient
// millimetres from each slice's own position, the orientation and the pixel spacing. ROI names
// follow AAPM TG-263 (CheckTG263Name), RTROIInterpretedType and ROIGenerationAlgorithm come from
// the ROIDescription, an ROI without any mask pixel is written without contours.
//
// # Preview
//
// RenderPreview draws a source slice (auto-windowed grey) with each segment's outline in a
// distinct Palette colour and a legend; `dpersona preview` writes it as PNG.
package dicomio
