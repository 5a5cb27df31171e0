// Loads DICOM SEG objects the way OHIF's Cornerstone viewer does, with dcmjs: the SEG is parsed
// (DicomMessage.readFile, naturalizeDataset) and handed with the referenced CT images to
// adapters.Cornerstone.Segmentation.generateToolState, which maps every frame to its source image
// and fills labelmaps (several when segments overlap); segment colours come from
// RecommendedDisplayCIELabValue through dcmjs's dicomlab2RGB, as OHIF converts them.
//
//   node check_seg.js SPEC.json OUT.json
//
// SPEC: {"ct": [CT file paths], "segs": [{"name": "raters", "path": "raters.dcm"}, ...]}
// OUT:  {"segs": [{"name", "error" (the adapter's exception, "" when it loaded), "warnings",
//        "segmentation_type", "segments": [{"number", "label", "tracking_id", "tracking_uid",
//        "cielab", "rgb"}], "labelmaps", "pixels": {"<segment number>": {"<SOP Instance UID>":
//        [pixel indices, row-major]}}}]}
// The Go test compares OUT with what it encoded; this script only reports what dcmjs made of it.
"use strict";
const fs = require("fs");
const dcmjs = require("dcmjs");

const { DicomMessage, DicomMetaDictionary, Colors } = dcmjs.data;

function readDataset(path) {
  const b = fs.readFileSync(path);
  const ab = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  const dicom = DicomMessage.readFile(ab);
  const ds = DicomMetaDictionary.naturalizeDataset(dicom.dict);
  ds._meta = DicomMetaDictionary.namifyDataset(dicom.meta);
  return { ab, ds };
}

const asArray = (v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

// A Cornerstone-style metadata provider over the referenced CT images, answering the modules
// the segmentation adapter asks for.
function ctProvider(paths) {
  const imageIds = [];
  const byId = new Map();
  paths.forEach((p, i) => {
    const { ds } = readDataset(p);
    const id = "dicomfile:" + i;
    imageIds.push(id);
    const iop = asArray(ds.ImageOrientationPatient).map(Number);
    const ipp = asArray(ds.ImagePositionPatient).map(Number);
    byId.set(id, {
      imagePlaneModule: {
        frameOfReferenceUID: ds.FrameOfReferenceUID,
        rows: ds.Rows,
        columns: ds.Columns,
        rowCosines: iop.slice(0, 3),
        columnCosines: iop.slice(3, 6),
        imagePositionPatient: ipp,
        pixelSpacing: asArray(ds.PixelSpacing).map(Number),
      },
      generalSeriesModule: { seriesInstanceUID: ds.SeriesInstanceUID, modality: ds.Modality },
      imagePixelModule: { rows: ds.Rows, columns: ds.Columns },
      sopCommonModule: { sopInstanceUID: ds.SOPInstanceUID, sopClassUID: ds.SOPClassUID },
      instance: ds,
    });
  });
  return {
    imageIds,
    sop: (id) => byId.get(id).sopCommonModule.sopInstanceUID,
    provider: { get: (type, id) => (byId.get(id) || {})[type] },
  };
}

function check(seg, ct) {
  const out = { name: seg.name, error: "", warnings: [], segments: [], labelmaps: 0, pixels: {} };
  const { ab, ds } = readDataset(seg.path);
  out.segmentation_type = ds.SegmentationType || "";
  for (const s of asArray(ds.SegmentSequence)) {
    const lab = asArray(s.RecommendedDisplayCIELabValue).map(Number);
    out.segments.push({
      number: s.SegmentNumber,
      label: s.SegmentLabel || "",
      tracking_id: s.TrackingID || "",
      tracking_uid: s.TrackingUID || "",
      cielab: lab,
      rgb: lab.length === 3 ? Colors.dicomlab2RGB(lab).map((x) => Math.round(x * 255)) : [],
    });
  }
  const warn = console.warn;
  console.warn = (...args) => out.warnings.push(args.join(" "));
  let state;
  try {
    state = dcmjs.adapters.Cornerstone.Segmentation.generateToolState(ct.imageIds, ab, ct.provider);
  } catch (e) {
    out.error = String((e && e.message) || e);
    return out;
  } finally {
    console.warn = warn;
  }
  if (!state || !state.labelmapBufferArray) {
    out.error = "generateToolState returned no labelmaps";
    return out;
  }
  // The segments the adapter itself lists (index 0 is unused, as in Cornerstone).
  out.adapter_segments = asArray(state.segMetadata && state.segMetadata.data).filter(Boolean).map((s) => s.SegmentNumber);
  out.labelmaps = state.labelmapBufferArray.length;
  const sliceLength = ds.Rows * ds.Columns;
  for (const buf of state.labelmapBufferArray) {
    const lm = new Uint16Array(buf);
    ct.imageIds.forEach((id, i) => {
      for (let k = 0; k < sliceLength; k++) {
        const v = lm[i * sliceLength + k];
        if (!v) continue;
        const bySop = (out.pixels[v] = out.pixels[v] || {});
        (bySop[ct.sop(id)] = bySop[ct.sop(id)] || []).push(k);
      }
    });
  }
  return out;
}

function main() {
  const [specPath, outPath] = process.argv.slice(2);
  if (!specPath || !outPath) {
    console.error("usage: node check_seg.js SPEC.json OUT.json");
    process.exit(2);
  }
  const spec = JSON.parse(fs.readFileSync(specPath, "utf8"));
  const ct = ctProvider(spec.ct);
  // dcmjs's package.json is not exported: read the installed one for the version.
  const version = JSON.parse(fs.readFileSync(require("path").join(__dirname, "node_modules", "dcmjs", "package.json"), "utf8")).version;
  const result = { dcmjs: version, segs: spec.segs.map((s) => check(s, ct)) };
  fs.writeFileSync(outPath, JSON.stringify(result));
}

main();
