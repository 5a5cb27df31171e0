// Writes a TID 1500 Imaging Measurement Report the way OHIF exports measurements: the annotations
// (Cornerstone3D tool state in patient coordinates) go through dcmjs's Cornerstone3D adapter
// MeasurementReport.generateReport, which builds TID 1501 measurement groups from TID 300
// measurements (Length, Bidirectional, EllipticalROI, ArrowAnnotate, Probe) with SCOORD
// coordinates on the referenced CT image. The CT is testdata/dicom/lidc-ct-0005 (LIDC-IDRI);
// the annotations sit on the nodule the LIDC readers outlined on slices 3 and 4
// (reader_masks.npz). Run once: npm ci && node make_dcmjs_sr.js; the output is committed.
"use strict";
const fs = require("fs");
const path = require("path");
const dcmjs = require("dcmjs");

const ctDir = path.join(__dirname, "..", "dicom", "lidc-ct-0005");
const outFile = path.join(__dirname, "..", "dicom", "prompts", "lidc-ct-0005-dcmjs-sr.dcm");

const images = {};
for (const name of fs.readdirSync(ctDir).filter((n) => n.endsWith(".dcm")).sort()) {
  const buf = fs.readFileSync(path.join(ctDir, name));
  const dicomData = dcmjs.data.DicomMessage.readFile(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength), { untilTag: "7FE00010" });
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicomData.dict);
  images["wadouri:" + name] = ds;
}

// Image (column, row) <-> patient (x, y, z) with the plane of each image (PS3.3 C.7.6.2.1.1).
function plane(ds) {
  const [rx, ry, rz, cx, cy, cz] = ds.ImageOrientationPatient.map(Number);
  const [dr, dc] = ds.PixelSpacing.map(Number); // between rows, between columns
  const o = ds.ImagePositionPatient.map(Number);
  return { r: [rx, ry, rz], c: [cx, cy, cz], dr, dc, o };
}
function imageToWorld(imageId, [col, row]) {
  const p = plane(images[imageId]);
  return [0, 1, 2].map((k) => p.o[k] + col * p.dc * p.r[k] + row * p.dr * p.c[k]);
}
function worldToImageCoords(imageId, w) {
  const p = plane(images[imageId]);
  const d = [0, 1, 2].map((k) => w[k] - p.o[k]);
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  return [dot(d, p.r) / p.dc, dot(d, p.c) / p.dr];
}

const metadataProvider = {
  get(type, imageId) {
    const ds = images[imageId];
    switch (type) {
      case "sopCommonModule":
        return { sopInstanceUID: ds.SOPInstanceUID, sopClassUID: ds.SOPClassUID };
      case "generalSeriesModule":
        return { studyInstanceUID: ds.StudyInstanceUID, seriesInstanceUID: ds.SeriesInstanceUID };
      case "frameNumber":
        return 1;
      case "instance":
        return ds;
    }
    return undefined;
  },
};

const nodule = { SCT: "27925004", meaning: "Nodule" };
const finding = { CodeValue: nodule.SCT, CodingSchemeDesignator: "SCT", CodeMeaning: nodule.meaning };
function annotation(toolName, imageId, pointsImage, stats) {
  return {
    metadata: { toolName, referencedImageId: imageId, FrameOfReferenceUID: images[imageId].FrameOfReferenceUID },
    data: { handles: { points: pointsImage.map((p) => imageToWorld(imageId, p)), arrowFirst: true }, cachedStats: { ["imageId:" + imageId]: stats }, text: "Nodule" },
    finding,
  };
}

// Slice 003 (instance 3): the nodule spans rows 401-410, columns 307-317; slice 004: rows
// 401-412, columns 306-317 (union of the four readers).
const s3 = "wadouri:003.dcm";
const s4 = "wadouri:004.dcm";
const toolState = {
  [s4]: {
    Length: { data: [annotation("Length", s4, [[306, 406], [317, 407]], { length: 7.7 })] },
    Bidirectional: { data: [annotation("Bidirectional", s4, [[312, 401], [311, 412], [306, 406], [317, 406]], { length: 7.7, width: 7.7 })] },
  },
  [s3]: {
    EllipticalROI: { data: [annotation("EllipticalROI", s3, [[312, 401], [312, 410], [307, 406], [317, 406]], { area: 35, mean: -100, stdDev: 200 })] },
    ArrowAnnotate: { data: [annotation("ArrowAnnotate", s3, [[312, 406], [340, 380]], {})] },
    Probe: { data: [annotation("Probe", s3, [[311, 405]], { value: -50 })] },
  },
};

const report = dcmjs.adapters.Cornerstone3D.MeasurementReport.generateReport(toolState, metadataProvider, worldToImageCoords, {});
const ds = report.dataset;
// OHIF's exporter fills the patient module from the source images before writing.
const src = images[s4];
for (const k of ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName"]) {
  if (src[k] !== undefined) ds[k] = src[k];
}
ds.SeriesDescription = "dcmjs measurements";
const buffer = dcmjs.data.datasetToBuffer(ds);
fs.mkdirSync(path.dirname(outFile), { recursive: true });
fs.writeFileSync(outFile, Buffer.from(buffer));
console.log("wrote", outFile);
