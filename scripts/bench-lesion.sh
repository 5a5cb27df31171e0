#!/usr/bin/env bash
# Lesion benchmark: one lesion against today's whole-lung mode, in the same run, on a 28-slice
# chest CT built from the real lidc-ct-0005 slices (fresh UIDs, 2.5 mm apart, one frame of
# reference) with the TID 1500 measurement SR of its nodule rewritten for that study.
#
#   1. model alone: `dpersona infer` whole-lung vs `dpersona infer --prompts SR` (lesion mode);
#   2. end to end through the real gateway (bin/dpersona serve, every role, embedded NATS) to a
#      real Orthanc over C-STORE: the same study (new UIDs per mode) sent with storescu, the SR
#      last in lesion mode; from the last instance (the SR, whichever is later) to every SEG
#      acknowledged by the PACS. Two routes select by calling AE title: BENCH_WL (whole lung) and
#      BENCH_LS (lesion mode, no wait: the SR comes with the images).
# Goal: last instance or prompt to SEG at the PACS within the quiet window + 1 s on 2 cores.
#
# Env: BENCH_MODEL (default models/default, else inference/testdata/tiny), BENCH_QUIET (1s),
# BENCH_LESION_SLICES (28), BENCH_LESION_MODES ("whole-lung lesion"; "lesion" alone repeats the
# latency measurement without the minute of whole-lung inference).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/dpersona
WORK=$ROOT/var/bench-lesion
QUIET=${BENCH_QUIET:-1s}
SLICES=${BENCH_LESION_SLICES:-28}
MODEL=${BENCH_MODEL:-models/default}
MODES=${BENCH_LESION_MODES:-whole-lung lesion}
if [ ! -f "$MODEL/manifest.json" ]; then
  echo "bench-lesion: no bundle at $MODEL; using the small test model inference/testdata/tiny (timings of the path, not of the production model)"
  MODEL=inference/testdata/tiny
fi
die() { echo "bench-lesion: $*" >&2; exit 1; }
PY=/usr/bin/python3
$PY -c 'import pydicom' 2>/dev/null || die "/usr/bin/python3 cannot import pydicom (python3-pydicom): run scripts/setup.sh"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
require_bench_tools

bench_workspace

# make_study NAME: SLICES slices with fresh UIDs cycling the real lidc-ct-0005 files along z, and
# DIR/sr/sr.dcm: the shared measurement SR with the study, series, instance and referenced image
# UIDs rewritten (the nodule is on copies of 004.dcm). Prints the study UID.
make_study() {
  local dir=$WORK/studies/$1
  mkdir -p "$dir/ct" "$dir/sr"
  $PY - "$ROOT" "$dir" "$SLICES" <<'EOF'
import glob, os, sys, uuid
import pydicom
root, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
src = sorted(glob.glob(os.path.join(root, "testdata/dicom/lidc-ct-0005/*.dcm")))
uid = lambda: "2.25.%d" % uuid.uuid4().int
study, series = uid(), uid()
new = {}
for i in range(n):
    d = pydicom.dcmread(src[i % len(src)])
    old = d.SOPInstanceUID
    d.StudyInstanceUID, d.SeriesInstanceUID = study, series
    d.SOPInstanceUID = d.file_meta.MediaStorageSOPInstanceUID = uid()
    d.InstanceNumber = i + 1
    d.ImagePositionPatient = [-180.0, -180.0, round(-120.045 - 2.5 * i, 3)]
    d.save_as(os.path.join(out, "ct", "%03d.dcm" % i))
    new.setdefault(old, d.SOPInstanceUID)  # the first copy of each source slice
sr = pydicom.dcmread(os.path.join(root, "testdata/dicom/prompts/lidc-ct-0005-length-sr.dcm"))
sr.StudyInstanceUID, sr.SeriesInstanceUID = study, uid()
sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = uid()
def walk(ds):
    for el in ds.iterall():
        if el.keyword == "ReferencedSOPInstanceUID" and el.value in new:
            el.value = new[el.value]
        if el.keyword in ("StudyInstanceUID", "SeriesInstanceUID") and el.value not in (study, sr.SeriesInstanceUID):
            el.value = study if el.keyword == "StudyInstanceUID" else series
walk(sr)
sr.save_as(os.path.join(out, "sr", "sr.dcm"))
print(study)
EOF
}

start_bench_orthanc
GW_DICOM=$(free_port); GW_HTTP=$(free_port)
cat > "$WORK/config.json" <<EOF
{"routes": [
  {"name": "whole-lung", "calling_ae": "BENCH_WL", "modality": "CT", "outputs": ["raters", "samples", "consensus"]},
  {"name": "lesions", "calling_ae": "BENCH_LS", "modality": "CT", "outputs": ["raters", "samples", "consensus"], "lesions": {}}
]}
EOF
"$BIN" serve --config "$WORK/config.json" --data-dir "$WORK/data" --dicom-listen "127.0.0.1:$GW_DICOM" --http-listen "127.0.0.1:$GW_HTTP" \
  --quiet-window "$QUIET" --model "$MODEL" --forward-to "ORTHANC@127.0.0.1:$ORTHANC_DICOM" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$GW_HTTP/api/studies" 120 || die "the gateway did not start (see $WORK/serve.log)"
echo "model $MODEL, $SLICES slices, quiet window $QUIET, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for mode in $MODES; do
  case $mode in whole-lung|lesion) ;; *) die "BENCH_LESION_MODES: unknown mode $mode (whole-lung, lesion)" ;; esac
  study=$(make_study "$mode")
  dir=$WORK/studies/$mode
  args=(); ae=BENCH_WL; files=("$dir"/ct/*.dcm)
  if [ $mode = lesion ]; then args=(--prompts "$dir/sr/sr.dcm"); ae=BENCH_LS; files+=("$dir/sr/sr.dcm"); fi
  # The model alone on the same files (infer's own timing, engine load excluded).
  offline=$("$BIN" infer --model "$MODEL" --outputs raters,samples,consensus "${args[@]}" --out "$WORK/offline/$mode" "$dir/ct" 2>/dev/null | \
    sed -n 's/.* tiles in \([0-9.]*\)s (load \([0-9.]*\)s, infer \([0-9.]*\)s.*/\1 \3/p' | head -1)
  [ -n "$offline" ] || die "dpersona infer failed for $mode"
  TCP_NODELAY=1 timeout 300 storescu -R -aet $ae -aec DPERSONA 127.0.0.1 "$GW_DICOM" "${files[@]}" || die "storescu failed"
  state=$(wait_study_state "http://127.0.0.1:$GW_HTTP/api/studies" "$study" 1800)
  [ "$state" = done ] || die "study $mode ended $state (see $WORK/serve.log)"
  curl -fsS "http://127.0.0.1:$GW_HTTP/api/studies" | $PY -c '
import datetime, json, re, sys
study, mode, offline = sys.argv[1], sys.argv[2], sys.argv[3].split()
def ts(v):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", v)
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return base.timestamp() + float("0." + (m.group(2) or "0"))
for s in json.load(sys.stdin):
    if s["study_instance_uid"] != study:
        continue
    last, comp, done = (ts(s[k]) for k in ("last_received_at", "completed_at", "done_at"))
    lesions = sum(1 for l in s.get("lesions") or [] if l["state"] == "processed")
    segs = sum(r["segments"] for r in s.get("results") or [])
    print("\t".join([mode, offline[1], offline[0], f"{comp-last:.2f}", f"{done-comp:.2f}", f"{done-last:.2f}", str(lesions), str(segs)]))
' "$study" "$mode" "$offline" >>"$RESULTS"
done

$PY - "$RESULTS" "$QUIET" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
quiet = float(sys.argv[2].rstrip("s"))
head = ["mode", "model alone s", "infer total s", "quiet window s", "complete->SEG at PACS s", "last instance->SEG at PACS s", "lesions", "segments"]
w = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
print()
print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
print("  ".join("-" * w[i] for i in range(len(head))))
for r in rows:
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))
by = {r[0]: r for r in rows}
if "whole-lung" in by and "lesion" in by:
    wl, ls = by["whole-lung"], by["lesion"]
    print()
    print(f"lesion / whole-lung, same run: model {float(ls[1]) / float(wl[1]):.3f}x, complete->SEG at PACS {float(ls[4]) / float(wl[4]):.3f}x")
    after = float(ls[5]) - quiet
    print(f"goal (last instance or prompt -> SEG at the PACS within quiet window + 1 s): {'met' if after <= 1.0 else 'NOT met'} "
          f"({ls[5]} s = quiet window {quiet:g} s + {after:.2f} s; the measured quiet window was {ls[3]} s, "
          f"study complete -> SEG at the PACS {ls[4]} s)")
EOF
