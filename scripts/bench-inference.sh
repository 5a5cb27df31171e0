#!/usr/bin/env bash
# Inference benchmark (`make bench`): both D-Persona stages through Go + onnxruntime against
# PyTorch eager on the same weights, the same thread count, in the same run.
#
# For each model configuration (BENCH_CONFIGS, default "reference lite"):
#   1. scripts/bench_torch_infer.py make-bundle builds the training package's DPersona with seeded
#      random weights (cost does not depend on the weight values), exports it to ONNX and keeps the
#      same weights as weights.pt (cached under var/bench/<config>/);
#   2. PyTorch eager times DPersona.serve, then `dpersona models bench` times the ONNX graph,
#      each for S in {10, 50}, K in {100, 500}, batch in {1, 8} (one slice = one 128x128 input),
#      one warm-up and BENCH_ITERS timed calls per case; both report the fastest call (the one
#      least disturbed by other work on a shared machine) and the mean;
#   3. one line per combination: ms per slice and slices/s of both, and `speedup <ratio>x`.
# Then an end-to-end figure: `dpersona infer` on a 28-slice 512x512 CT series (decode, tile, infer
# both stages, blend, encode three SEGs), built from the 7 real LIDC-IDRI slices of
# testdata/dicom/lidc-ct-0005 repeated four times at distinct z positions with new UIDs: the
# default configuration (the manifest's region of interest and the automatic session pool)
# against every tile on one session, alternating, E2E_RUNS (default 2) times each.
#
# Environment: BENCH_THREADS (default 2), BENCH_ITERS (timed runs per combination, default 3),
# BENCH_CONFIGS, BENCH_E2E_MODEL (bundle for the end-to-end run; default models/default when it
# exists, else the lite bench bundle), PYTHON (an interpreter with torch; default /usr/bin/python3).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${BENCH_THREADS:-2}
ITERS=${BENCH_ITERS:-3}
CONFIGS=${BENCH_CONFIGS:-"reference lite"}
PYTHON=${PYTHON:-/usr/bin/python3}
# Neither side busy-waits: onnxruntime's intra-op spinning is off by default in dpersona (--spin
# turns it on), and PyTorch's OpenMP threads get OMP_WAIT_POLICY=PASSIVE. On a machine shared with
# other work, spinning OpenMP threads made PyTorch 10x slower here, which would flatter the ratio.
OMP_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
WORK=var/bench
BIN=$WORK/dpersona
mkdir -p "$WORK"

if ! "$PYTHON" -c 'import torch, onnx' 2>/dev/null; then
  echo "bench-inference: $PYTHON cannot import torch and onnx (run scripts/setup.sh)" >&2
  exit 1
fi
go build -o "$BIN" ./cmd/dpersona
export DPERSONA_ORT_LIB=${DPERSONA_ORT_LIB:-$PWD/third_party/onnxruntime/libonnxruntime.so.1.27.0}

echo "inference bench: $(nproc) CPUs, $THREADS threads each side (no spinning; torch OMP_WAIT_POLICY=$OMP_POLICY), $ITERS timed runs per case after one warm-up"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

for config in $CONFIGS; do
  bundle=$WORK/$config
  if [ ! -f "$bundle/manifest.json" ] || [ ! -f "$bundle/weights.pt" ]; then
    echo "bench-inference: exporting the $config configuration (seeded random weights) to $bundle"
    rm -rf "$bundle"
    "$PYTHON" scripts/bench_torch_infer.py make-bundle --config "$config" --out "$bundle" 2>/dev/null
  fi
  "$BIN" models verify "$bundle" --threads "$THREADS" >/dev/null
  OMP_WAIT_POLICY=$OMP_POLICY "$PYTHON" scripts/bench_torch_infer.py bench --bundle "$bundle" --threads "$THREADS" \
    --samples 10,50 --bank 100,500 --batch 1,8 --iters "$ITERS" > "$WORK/$config.torch.jsonl"
  "$BIN" models bench "$bundle" --threads "$THREADS" --samples 10,50 --bank 100,500 \
    --batches 1,8 --iters "$ITERS" > "$WORK/$config.ort.jsonl"
  "$PYTHON" - "$config" "$WORK/$config.torch.jsonl" "$WORK/$config.ort.jsonl" <<'EOF'
import json, sys
config, torch_path, ort_path = sys.argv[1:]
key = lambda r: (r["samples"], r["bank"], r["batch"])
torch_rows = {key(r): r for r in map(json.loads, open(torch_path))}
ort_rows = {key(r): r for r in map(json.loads, open(ort_path))}
print(f"--- {config}: both stages per 128x128 slice, fastest of {next(iter(ort_rows.values()))['iters']} runs "
      f"(PyTorch eager vs Go+onnxruntime)")
print(f"{'S':>3} {'K':>4} {'batch':>5} | {'torch ms/slice':>14} {'slices/s':>9} | {'ort ms/slice':>12} {'slices/s':>9} | speedup")
ratios = []
for k in sorted(ort_rows):
    t, o = torch_rows[k], ort_rows[k]
    r = t["ms_per_slice"] / o["ms_per_slice"]
    ratios.append(r)
    print(f"{k[0]:>3} {k[1]:>4} {k[2]:>5} | {t['ms_per_slice']:>14.1f} {t['slices_per_s']:>9.2f} | "
          f"{o['ms_per_slice']:>12.1f} {o['slices_per_s']:>9.2f} | speedup {r:.1f}x "
          f"({config} S={k[0]} K={k[1]} batch={k[2]})")
gm = 1.0
for r in ratios:
    gm *= r
gm **= 1 / len(ratios)
print(f"{config}: geometric-mean speedup {gm:.1f}x over {len(ratios)} cases (goal >= 5x)")
EOF
done

# End-to-end: a 28-slice CT series.
ct28=$WORK/ct28
if [ ! -f "$ct28/.complete" ]; then
  rm -rf "$ct28"
  mkdir -p "$ct28"
  "$PYTHON" - testdata/dicom/lidc-ct-0005 "$ct28" <<'EOF'
import glob, hashlib, os, sys
import pydicom
src, dst = sys.argv[1:]
files = sorted(glob.glob(os.path.join(src, "*.dcm")))
slices = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
zs = [float(d.ImagePositionPatient[2]) for d in slices]
step = (zs[-1] - zs[0]) / (len(zs) - 1) if len(zs) > 1 else 2.5
series_uid = "2.25." + str(int(hashlib.sha256(b"dpersona-bench-ct28-series").hexdigest()[:30], 16))
n = 0
for rep in range(4):
    for d in slices:
        d = pydicom.dcmread(d.filename)
        n += 1
        uid = "2.25." + str(int(hashlib.sha256(f"dpersona-bench-ct28-{n}".encode()).hexdigest()[:30], 16))
        d.SOPInstanceUID = uid
        d.file_meta.MediaStorageSOPInstanceUID = uid
        d.SeriesInstanceUID = series_uid
        d.InstanceNumber = n
        pos = [float(v) for v in d.ImagePositionPatient]
        pos[2] = zs[0] + (n - 1) * step
        d.ImagePositionPatient = [f"{v:.6g}" for v in pos]
        if "SliceLocation" in d:
            d.SliceLocation = f"{pos[2]:.6g}"
        d.save_as(os.path.join(dst, f"{n:03d}.dcm"))
print(f"ct28: {n} slices from {len(files)} LIDC-IDRI slices, z step {step:.3g} mm")
EOF
  touch "$ct28/.complete"
fi
model=${BENCH_E2E_MODEL:-}
if [ -z "$model" ]; then
  if [ -f models/default/manifest.json ]; then model=models/default; else model=$WORK/lite; fi
fi
# Two configurations in the same run, alternating, best of E2E_RUNS each: the default (the
# manifest's region of interest, "lung" for the default model, and the automatic session pool:
# one single-threaded session per CPU) against every tile on one session of all threads (the
# previous default, as the baseline).
E2E_RUNS=${E2E_RUNS:-2}
echo "--- end to end: 28-slice CT (512x512) with $model, best of $E2E_RUNS alternating runs (wall time of \`dpersona infer\`, process start and model load included)"
e2e() { # name args... -> seconds on stdout, the infer summary in $WORK/ct28.<name>.log
  local name=$1; shift
  rm -rf "$WORK/ct28-out"
  local s e
  s=$(date +%s.%N)
  "$BIN" infer --model "$model" --out "$WORK/ct28-out" "$@" "$ct28" >"$WORK/ct28.$name.log"
  e=$(date +%s.%N)
  awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }'
}
best_all=; best_def=
for run in $(seq 1 "$E2E_RUNS"); do
  t=$(e2e all --roi all --sessions 1 --threads "$THREADS"); best_all=$(awk -v a="$best_all" -v t="$t" 'BEGIN { print (a == "" || t < a) ? t : a }')
  t=$(e2e default); best_def=$(awk -v a="$best_def" -v t="$t" 'BEGIN { print (a == "" || t < a) ? t : a }')
done
tiles() { grep -o '[0-9]* of [0-9]* tiles' "$WORK/ct28.$1.log"; }
printf "e2e 28-slice CT, every tile, 1 session x %s threads (baseline): %6.2f s  (%s)\n" "$THREADS" "$best_all" "$(tiles all)"
printf "e2e 28-slice CT, default: roi from the manifest, auto sessions:  %6.2f s  (%s)  speedup %.2fx over the baseline (target < 2 s)\n" \
  "$best_def" "$(tiles default)" "$(awk -v a="$best_all" -v d="$best_def" 'BEGIN { print a / d }')"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
