#!/usr/bin/env bash
# Runs every Go fuzz target of the repository (func Fuzz... in _test.go files), one after the
# other, for FUZZ_TIME each. Meant for `make fuzz`, outside CI: CI runs the seed corpora only, as
# part of `go test`. A crash makes `go test -fuzz` write the failing input under the package's
# testdata/fuzz/FuzzXxx/; commit it with the fix so it stays a regression case.
#
#   FUZZ_TIME=60s     how long each target runs (any `go test -fuzztime` value, e.g. 10m or 5000x)
#   FUZZ_PKGS=./...   which packages to search for targets
#   FUZZ_MATCH=.      only targets whose name matches this regular expression (grep -E)
#   FUZZ_WORKERS=     fuzzing processes per target (go test -parallel; default GOMAXPROCS)
#   FUZZ_MINIMIZE=200x  -fuzzminimizetime: bounded, because minimising every new interesting input
#                     for the default 60 s each otherwise eats most of a short budget
#
# Exits non-zero when a target found a failure (all targets still run) or when no target exists.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_TIME=${FUZZ_TIME:-60s}
FUZZ_PKGS=${FUZZ_PKGS:-./...}
FUZZ_MATCH=${FUZZ_MATCH:-.}
FUZZ_WORKERS=${FUZZ_WORKERS:-}
FUZZ_MINIMIZE=${FUZZ_MINIMIZE:-200x}
GO=${GO:-go}

# `go test -list` prints the matching names of each package, then "ok <pkg> <time>" for it.
listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
if ! $GO test -list '^Fuzz' $FUZZ_PKGS >"$listing" 2>&1; then
  echo "fuzz: listing the fuzz targets failed (does the tree build?):" >&2
  cat "$listing" >&2
  exit 1
fi

targets=()   # "pkg name"
names=()
while IFS= read -r line; do
  case "$line" in
    Fuzz*) names+=("$line") ;;
    ok*)
      pkg=$(awk '{print $2}' <<<"$line")
      for n in "${names[@]+"${names[@]}"}"; do
        if grep -Eq -- "$FUZZ_MATCH" <<<"$n"; then targets+=("$pkg $n"); fi
      done
      names=()
      ;;
    *) names=() ;;
  esac
done <"$listing"

if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets found in $FUZZ_PKGS matching '$FUZZ_MATCH'" >&2
  exit 1
fi

echo "fuzz: ${#targets[@]} target(s), $FUZZ_TIME each"
parallel=()
[ -n "$FUZZ_WORKERS" ] && parallel=(-parallel "$FUZZ_WORKERS")
failed=()
for t in "${targets[@]}"; do
  pkg=${t%% *}
  name=${t#* }
  echo "=== $pkg $name"
  # -run '^$' skips the ordinary tests; the target's seed corpus runs before fuzzing starts.
  if ! $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZ_TIME" -fuzzminimizetime "$FUZZ_MINIMIZE" "${parallel[@]+"${parallel[@]}"}" "$pkg"; then
    failed+=("$pkg $name")
  fi
done

echo
echo "fuzz: $(( ${#targets[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  printf '  FAILED %s\n' "${failed[@]}"
  echo "fuzz: the failing inputs are under each package's testdata/fuzz/<target>/; fix, keep them, commit" >&2
  exit 1
fi
