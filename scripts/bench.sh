#!/usr/bin/env bash
# `make bench`: every benchmark of the project, each measuring against its baseline in the same run
# (these machines are noisy, so only same-run ratios mean anything). Each part is a script of its
# own; a missing part is reported, not silently skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for part in gateway inference pipeline lesion training; do
  script=scripts/bench-$part.sh
  echo "=== bench: $part"
  if [ ! -f "$script" ]; then
    echo "bench: $script is missing" >&2
    status=1
    continue
  fi
  bash "$script" || { echo "bench: $part failed" >&2; status=1; }
done
echo "=== bench: Go micro-benchmarks"
go test -run '^$' -bench . -benchtime 3x ./dicomio/... ./inference/... || status=1
# The cost of durability on this disk: the receive path with and without its fsyncs, same run.
go test -run '^$' -bench ReceiveStorescu -benchtime 5x ./gateway/ || status=1
exit $status
