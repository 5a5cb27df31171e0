#!/usr/bin/env bash
# `make demo`: the whole story on one machine, nothing outside the repository.
#
#   1. a downstream PACS: Orthanc (Debian package) on loopback, as user nobody;
#   2. the gateway: bin/dpersona serve with every role, the embedded NATS JetStream and the default
#      model (models/default), forwarding every result to Orthanc with C-STORE;
#   3. a real CT study (testdata/dicom/lidc-ct-0005, LIDC-IDRI, CC BY 3.0) sent with dcmtk storescu,
#      then, as a radiologist's viewer would a little later, the TID 1500 measurement SR of the
#      nodule (testdata/dicom/prompts/lidc-ct-0005-length-sr.dcm): the route runs in lesion mode
#      (it waits for the SR, then segments the measured nodule only);
#   4. a table of what arrived at Orthanc (SEG objects, segments, frames) with the timings, the
#      lesions the gateway placed (GET /api/studies), and a preview PNG per SEG object
#      (bin/dpersona preview) under var/demo/out/.
#
# DEMO_MODE=whole-lung runs today's whole-lung screening instead (no SR sent).
#
# Without a model bundle the demo runs ingest only and says so. DEMO_MODEL=DIR picks another
# bundle (e.g. inference/testdata/tiny, the small test model). Every wait is bounded; every process
# the demo starts is stopped on exit, including on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/dpersona
STUDY_DIR=$ROOT/testdata/dicom/lidc-ct-0005
WORK=$ROOT/var/demo
MODEL=${DEMO_MODEL:-models/default}
QUIET=${DEMO_QUIET_WINDOW:-2s}
MODE=${DEMO_MODE:-lesion}
SR=$ROOT/testdata/dicom/prompts/lidc-ct-0005-length-sr.dcm
PREVIEW_ARGS=()
[ "$MODE" = lesion ] && PREVIEW_ARGS=(--crop 96) # around the measured nodule
DEADLINE_S=${DEMO_TIMEOUT_S:-900}

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ -x "$BIN" ] || die "$BIN is missing: run 'make build' (make demo does)"
for tool in storescu curl; do command -v $tool >/dev/null || die "$tool is not installed: run scripts/setup.sh"; done
ORTHANC_BIN=$(command -v Orthanc || echo /usr/sbin/Orthanc)
[ -x "$ORTHANC_BIN" ] || die "Orthanc is not installed: run scripts/setup.sh"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

rm -rf "$WORK"
mkdir -p "$WORK/out" "$WORK/orthanc/db"
chmod 0777 "$WORK/orthanc" "$WORK/orthanc/db"

PIDS=()
cleanup() {
  stop_pids "${PIDS[@]}"
  # The PACS database and the gateway's data are demo scratch; the table and previews stay.
  rm -rf "$WORK/orthanc/db" "$WORK/data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ORTHANC_DICOM=$(free_port); ORTHANC_HTTP=$(free_port); GW_DICOM=$(free_port); GW_HTTP=$(free_port)

say "1/4 downstream PACS: Orthanc on 127.0.0.1:$ORTHANC_DICOM (DICOM) and :$ORTHANC_HTTP (REST)"
cat > "$WORK/orthanc/orthanc.json" <<EOF
{
  "Name": "dpersona-demo-pacs",
  "StorageDirectory": "$WORK/orthanc/db",
  "IndexDirectory": "$WORK/orthanc/db",
  "HttpPort": $ORTHANC_HTTP,
  "DicomPort": $ORTHANC_DICOM,
  "DicomAet": "ORTHANC",
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomAlwaysAllowStore": true,
  "DicomAlwaysAllowEcho": true,
  "DicomCheckCalledAet": false,
  "UnknownSopClassAccepted": true,
  "Plugins": ["/usr/share/orthanc/plugins"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}
}
EOF
RUN_AS=()
if [ "$(id -u)" = 0 ]; then RUN_AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups); fi
"${RUN_AS[@]}" "$ORTHANC_BIN" "$WORK/orthanc/orthanc.json" >"$WORK/orthanc.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$ORTHANC_HTTP/system" 30 || { tail -20 "$WORK/orthanc.log"; die "Orthanc did not start within 30s"; }

say "2/4 gateway: bin/dpersona serve (ingest, infer, dispatch; embedded NATS JetStream)"
SERVE_ARGS=(serve --data-dir "$WORK/data" --dicom-listen "127.0.0.1:$GW_DICOM" --http-listen "127.0.0.1:$GW_HTTP"
  --quiet-window "$QUIET" --forward-to "ORTHANC@127.0.0.1:$ORTHANC_DICOM")
if [ "$MODE" = lesion ]; then
  # One route in lesion mode: CT series wait up to 2 minutes for a lesion prompt. No "outputs":
  # a lesion route's default is raters, samples, the BINARY consensus and an RT Structure Set.
  cat > "$WORK/config.json" <<EOF
{"routes": [{"name": "lung-lesions", "modality": "CT",
             "lesions": {"wait_for_prompts": "120s", "without_prompts": "skip"}}]}
EOF
  SERVE_ARGS+=(--config "$WORK/config.json")
fi
HAVE_MODEL=0
if [ -f "$MODEL/manifest.json" ]; then
  HAVE_MODEL=1
  SERVE_ARGS+=(--model "$MODEL")
  echo "model: $MODEL ($($PY -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["name"], m["version"])' "$MODEL/manifest.json"))"
else
  SERVE_ARGS+=(--roles ingest,dispatch)
  cat <<EOF
*** No model bundle at $MODEL: this demo runs INGEST ONLY. ***
    The study is received, stored durably and handed to the bus, where it waits (state
    "complete") for an inference worker. To see the whole pipeline, put a bundle at
    models/default (python3 -m training export ..., see docs/model-bundle.md) or run
    DEMO_MODEL=inference/testdata/tiny make demo (a small test model: real outputs, not accurate).
EOF
fi
"$BIN" "${SERVE_ARGS[@]}" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$GW_HTTP/api/studies" 60 || { tail -20 "$WORK/serve.log"; die "the gateway did not start within 60s"; }
echo "listening on 127.0.0.1:$GW_DICOM (AE DPERSONA), API http://127.0.0.1:$GW_HTTP/api/studies"

FILES=("$STUDY_DIR"/*.dcm)
say "3/4 sending ${#FILES[@]} CT slices of $(basename "$STUDY_DIR") with storescu"
T0=$($PY -c 'import time; print(time.time())')
TCP_NODELAY=1 timeout 120 storescu -aet DEMO_CT -aec DPERSONA 127.0.0.1 "$GW_DICOM" "${FILES[@]}" \
  || die "storescu failed (see $WORK/serve.log)"
T1=$($PY -c 'import time; print(time.time())')
printf 'sent in %.2fs\n' "$($PY -c "print($T1-$T0)")"
if [ "$MODE" = lesion ] && [ $HAVE_MODEL = 1 ]; then
  # The images alone: the lesion route waits for a prompt (state "waiting", with the reason).
  end=$((SECONDS + 60)); state=""
  while [ $SECONDS -lt $end ] && [ "$state" != waiting ]; do
    sleep 0.5
    state=$(curl -fsS "http://127.0.0.1:$GW_HTTP/api/studies" 2>/dev/null | $PY -c 'import json,sys
d=json.load(sys.stdin); print(d[0]["state"] if d else "-")' 2>/dev/null || echo "?")
  done
  curl -fsS "http://127.0.0.1:$GW_HTTP/api/studies" | $PY -c 'import json,sys
d=json.load(sys.stdin)[0]; print("study state:", d["state"], "-", d.get("reason", ""))'
  say "3b/4 the radiologist measures the nodule: sending the TID 1500 measurement SR"
  TCP_NODELAY=1 timeout 60 storescu -R -aet DEMO_VIEWER -aec DPERSONA 127.0.0.1 "$GW_DICOM" "$SR" \
    || die "storescu of the SR failed (see $WORK/serve.log)"
  T1=$($PY -c 'import time; print(time.time())')
fi

say "4/4 following the study (quiet window $QUIET)"
end=$((SECONDS + DEADLINE_S))
last=""
final=""
while [ $SECONDS -lt $end ]; do
  state=$(curl -fsS "http://127.0.0.1:$GW_HTTP/api/studies" 2>/dev/null | $PY -c 'import json,sys
d=json.load(sys.stdin); print(d[0]["state"] if d else "-")' 2>/dev/null || echo "?")
  if [ "$state" != "$last" ]; then printf '%s  %s\n' "$(date +%T)" "$state"; last=$state; fi
  case $state in
    done|failed) final=$state; break ;;
    complete) [ $HAVE_MODEL = 0 ] && { final=complete; break; } ;;
  esac
  # Timings come from the gateway's timestamps; polling gently leaves the CPUs to the model.
  sleep 0.5
done
[ -n "$final" ] || die "the study did not finish within ${DEADLINE_S}s (state $last; see $WORK/serve.log)"

curl -fsS "http://127.0.0.1:$GW_HTTP/api/studies" >"$WORK/studies.json"
# Fetch every SEG and RT Structure Set Orthanc holds and render a preview of each SEG.
find_modality() {
  curl -fsS "http://127.0.0.1:$ORTHANC_HTTP/tools/find" -d "{\"Level\":\"Instance\",\"Query\":{\"Modality\":\"$1\"}}" | $PY -c 'import json,sys; print(" ".join(json.load(sys.stdin)))'
}
for id in $(find_modality RTSTRUCT); do
  curl -fsS "http://127.0.0.1:$ORTHANC_HTTP/instances/$id/file" -o "$WORK/out/$id.dcm"
  curl -fsS "http://127.0.0.1:$ORTHANC_HTTP/instances/$id/simplified-tags" -o "$WORK/out/$id.json"
done
for id in $(find_modality SEG); do
  curl -fsS "http://127.0.0.1:$ORTHANC_HTTP/instances/$id/file" -o "$WORK/out/$id.dcm"
  curl -fsS "http://127.0.0.1:$ORTHANC_HTTP/instances/$id/simplified-tags" -o "$WORK/out/$id.json"
  "$BIN" preview --seg "$WORK/out/$id.dcm" --source "$STUDY_DIR" --out "$WORK/out/$id.png" "${PREVIEW_ARGS[@]}" >/dev/null 2>"$WORK/out/$id.preview.log" \
    || echo "preview of $id failed: $(tail -1 "$WORK/out/$id.preview.log")"
  [ -s "$WORK/out/$id.preview.log" ] || rm -f "$WORK/out/$id.preview.log"
done

$PY - "$WORK" "$T1" "$ORTHANC_HTTP" <<'EOF'
import datetime, json, os, re, sys
work, t_sent, orthanc_http = sys.argv[1], float(sys.argv[2]), sys.argv[3]
studies = json.load(open(os.path.join(work, "studies.json")))
s = studies[0]
def ts(key):
    # Go writes RFC 3339 with up to nanoseconds, which datetime does not parse: split it.
    v = s.get(key)
    m = v and re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", v)
    if not m:
        return None
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    tz = m.group(3)
    off = 0 if tz == "Z" else (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * (1 if tz[0] == "+" else -1)
    return base.timestamp() + float("0." + (m.group(2) or "0")) - off
print()
print(f"study {s['study_instance_uid']}  called AE {s['called_ae']}  state {s['state']}")
print(f"  {s['instances']} instances in {len(s['series'])} series; reason: {s.get('reason', '-')}")
lesions = s.get("lesions") or []
if lesions:
    print()
    print("Lesion prompts (GET /api/studies/{uid}):")
    for l in lesions:
        where = f"slice {l.get('slice')} row {l.get('row')} column {l.get('column')}, followed over {l.get('slices_followed')} slices" if l["state"] == "processed" else l.get("reason", "")
        print(f"  {l['source']:8} {l.get('item', ''):22} {l.get('label', ''):10} {l['state']:9} {where}")
by_sop = {r["sop_instance_uid"]: r for r in s.get("results", [])}
rows = []
for name in sorted(os.listdir(os.path.join(work, "out"))):
    if not name.endswith(".json"):
        continue
    tags = json.load(open(os.path.join(work, "out", name)))
    sop = tags.get("SOPInstanceUID", "?")
    r = by_sop.get(sop, {})
    # A SEG lists segments, an RT Structure Set ROIs (one contour item per ROI and slice).
    segs = tags.get("SegmentSequence") or tags.get("StructureSetROISequence") or []
    kind = tags.get("SegmentationType") or tags.get("Modality", "?")
    contours = sum(len(c.get("ContourSequence") or []) for c in tags.get("ROIContourSequence") or [])
    # Name the files after the output (raters, samples, probability) instead of Orthanc's id.
    stem = os.path.join(work, "out", name[:-5])
    if r.get("output"):
        for ext in (".dcm", ".png", ".json", ".preview.log"):
            if os.path.exists(stem + ext):
                os.replace(stem + ext, os.path.join(work, "out", r["output"] + ext))
        stem = os.path.join(work, "out", r["output"])
    png = stem + ".png"
    d = (r.get("deliveries") or [{}])[0]
    rows.append((r.get("output", "?"), kind, str(len(segs)),
                 str(tags.get("NumberOfFrames", contours)), f"{os.path.getsize(stem + '.dcm')//1024} KiB",
                 d.get("status", "?"), tags.get("StudyInstanceUID") == s["study_instance_uid"] and "yes" or "NO",
                 os.path.relpath(png) if os.path.exists(png) else "-"))
print()
if rows:
    head = ("output", "type", "segments/ROIs", "frames/contours", "size", "C-STORE", "in study", "preview")
    w = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    fmt = "  ".join("{:<%d}" % n for n in w)
    print("What arrived at the PACS (Orthanc REST API):")
    print(fmt.format(*head))
    print(fmt.format(*["-" * n for n in w]))
    for r in sorted(rows):
        print(fmt.format(*r))
else:
    print("No SEG or RT Structure Set arrived at the PACS.")
print()
last = ts("last_received_at"); comp = ts("completed_at"); inf = ts("inferred_at"); done = ts("done_at")
def span(a, b):
    return f"{b - a:7.2f} s" if a is not None and b is not None else "      -"
print("Timings:")
print(f"  last instance received -> study complete   {span(last, comp)}   (the quiet window)")
print(f"  study complete -> SEG objects stored       {span(comp, inf)}   (inference)")
print(f"  SEG objects stored -> PACS acknowledged    {span(inf, done)}   (export)")
print(f"  last instance received -> SEG at the PACS  {span(last, done)}")
EOF
if [ "$final" = failed ]; then die "the study failed (see the reason above and $WORK/serve.log)"; fi
say "done: previews and SEG files in var/demo/out/, logs in var/demo/*.log"
